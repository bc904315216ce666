"""The README's pictures: a run's HTML report and one neuron view, rendered in headless Chromium
with networking disabled.

    python benchmarks/report_screenshots.py RUN_DIR --out OUT_DIR [--chromium /usr/bin/chromium]

writes ``OUT_DIR/report.html`` (``hneuron-lens report RUN_DIR --html``, loading the run's model
for the neuron views), ``OUT_DIR/report.png`` (the top of the page) and
``OUT_DIR/neuron_view.png`` (the strongest H-Neuron's view), and prints the times. Copy the PNGs
to ``docs/figures/`` to update the README. Needs playwright and a Chromium binary (never
downloads one).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--height", type=int, default=1800, help="pixels of the page top to capture")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from hneuron_lens.viz.html import write_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    page_path = write_report(args.run_dir, out / "report.html")
    print(
        f"report: {page_path} ({page_path.stat().st_size / 1e6:.1f} MB) in "
        f"{time.perf_counter() - t:.1f} s"
    )
    t = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        ctx = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        blocked: list[str] = []
        page.route(
            "**/*",
            lambda r: (
                r.continue_()
                if r.request.url.startswith(("file:", "data:"))
                else (blocked.append(r.request.url), r.abort())
            ),
        )
        page.goto(page_path.resolve().as_uri())
        page.wait_for_function(
            "document.querySelectorAll('.hnl-view-body .hnl-static').length === 0", timeout=30000
        )
        height = min(args.height, page.evaluate("document.body.scrollHeight"))
        page.screenshot(
            path=str(out / "report.png"),
            full_page=True,
            clip={"x": 0, "y": 0, "width": 1200, "height": height},
        )
        page.locator(".hnl-view").first.screenshot(path=str(out / "neuron_view.png"))
        browser.close()
    if blocked:
        raise SystemExit(f"the page tried the network: {blocked}")
    print(
        f"screenshots: {out / 'report.png'}, {out / 'neuron_view.png'} in "
        f"{time.perf_counter() - t:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
