"""`hneuron-lens report RUN_DIR --html`: one self-contained page, checked in headless Chromium
with networking disabled (no request attempted, no console error, every figure and neuron view
in the DOM, the circuitsvis views rendered with the neuron's tokens) and with JavaScript off
(the static tables). A screenshot is written to ``$HNL_ARTIFACTS`` (default ``tests/artifacts``).

The browser tests need the ``playwright`` Python package (dev extra) and a Chromium binary
(``chromium`` on PATH, or ``$HNL_CHROMIUM``); they never download a browser and are skipped with
the reason when either is missing.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from hneuron_lens.cli import main
from hneuron_lens.viz.html import GENERATOR, write_report
from tests.unit.viz_run import make_tiny_run

ARTIFACTS = Path(os.environ.get("HNL_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
N_FIGURES = 5  # funnel, C path, single-neuron AUROC vs weight, ROC/PR, layer distribution


def _chromium() -> str | None:
    env = os.environ.get("HNL_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny):
    model = tiny("llama")
    run, samples = make_tiny_run(tmp_path_factory.mktemp("run") / "run", model)
    return run, samples, model


@pytest.fixture(scope="module")
def report_file(tiny_run):
    run, samples, model = tiny_run
    return write_report(run, model=model, samples=samples, n_random=3, n_resamples=50)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')"
    )
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium binary: apt-get install chromium, or set HNL_CHROMIUM")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, path: Path, javascript: bool = True):
    """A page on ``path`` with every non-file request aborted and recorded."""
    ctx = browser.new_context(
        offline=True, java_script_enabled=javascript, viewport={"width": 1200, "height": 900}
    )
    page = ctx.new_page()
    requests: list[str] = []
    errors: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(("file:", "data:")):
            r.continue_()
        else:
            requests.append(url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: requests.append(f"failed: {r.url}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return ctx, page, requests, errors


def test_report_in_headless_chromium_offline(browser, report_file, tiny_run) -> None:
    import hneuron_lens as hl

    run, samples, _ = tiny_run
    n_h = len(hl.SparseProbe.load(run / "probe").h_neurons)
    n_views = min(4, n_h) + 1 + 2  # one per strongest H-Neuron, top-k tokens, 2 risk views
    t = time.perf_counter()
    ctx, page, requests, errors = _open(browser, report_file)
    try:
        page.wait_for_function(
            "document.querySelectorAll('.hnl-view-body .hnl-static').length === 0",
            timeout=15000,
        )
        assert requests == [], f"the page tried the network: {requests}"
        assert errors == [], f"console errors: {errors}"
        imgs = page.locator("img")
        assert imgs.count() == N_FIGURES
        for i in range(imgs.count()):  # every figure decoded (a broken PNG has no width)
            assert imgs.nth(i).evaluate("e => e.complete && e.naturalWidth > 100")
        views = page.locator(".hnl-view")
        assert views.count() == n_views
        # the circuitsvis components replaced the static tables and show the responses' tokens
        by_qid = {s.qid: s for s in samples}
        first = views.nth(0).locator(".hnl-view-body").inner_text()
        shown = [q for q in by_qid if q in first]
        assert shown, first[:300]
        for q in shown:
            assert by_qid[q].response.split()[-1].strip(".") in first
        for i in range(n_views):
            assert views.nth(i).locator(".hnl-view-body").inner_text().strip()
        for anchor in ("funnel", "path", "evaluation", "roc", "neurons", "views", "reproduce"):
            assert page.locator(f"section#{anchor}").count() == 1
        assert "hneuron-lens report" in page.locator("section#reproduce").inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "report_tiny.png"
        page.screenshot(path=str(shot), full_page=True)
        views.nth(0).screenshot(path=str(ARTIFACTS / "neuron_view_tiny.png"))
        assert shot.stat().st_size > 10_000
    finally:
        ctx.close()
    print(f"report checked in Chromium in {time.perf_counter() - t:.1f} s; screenshot {shot}")


def test_report_without_javascript_shows_static_tables(browser, report_file, tiny_run) -> None:
    _, samples, _ = tiny_run
    ctx, page, requests, errors = _open(browser, report_file, javascript=False)
    try:
        assert requests == [] and errors == []
        static = page.locator(".hnl-view-body .hnl-static")
        assert static.count() == page.locator(".hnl-view").count() > 0
        text = static.nth(0).inner_text()
        assert any(s.qid in text for s in samples)
        assert page.locator("img").count() == N_FIGURES
    finally:
        ctx.close()


def test_cli_report_html_without_views(tiny_run, tmp_path, capsys) -> None:
    run, _, _ = tiny_run
    out = tmp_path / "r.html"
    cmd = ["report", str(run), "--html", "--no-neuron-views", "--n-random", "2"]
    assert main([*cmd, "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert GENERATOR in text[:1000]
    assert text.count("<img") == N_FIGURES
    assert "CircuitsVis" not in text and "hnl-view" not in text
    assert "report.html" not in capsys.readouterr().err
    # a rerun replaces its own report; a foreign file is never replaced
    assert main([*cmd, "--out", str(out)]) == 0
    foreign = tmp_path / "notes.html"
    foreign.write_text("<p>mine</p>", encoding="utf-8")
    assert main([*cmd, "--out", str(foreign)]) == 2
    assert foreign.read_text(encoding="utf-8") == "<p>mine</p>"
    # not a run directory: one line, exit 2
    assert main(["report", str(tmp_path), "--html"]) == 2


def test_report_includes_alpha_sweeps_saved_in_the_run(tiny_run, tmp_path) -> None:
    from tests.unit.test_tasks import _synthetic_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    _synthetic_report(n_items=20, controls=2).save(run / "sweep_falseqa" / "report.json")
    out = write_report(run, tmp_path / "r.html", neuron_views=False, n_random=2)
    text = out.read_text(encoding="utf-8")
    assert 'id="sweep-0"' in text and "Alpha sweep: sweep_falseqa" in text
    assert text.count("<img") == N_FIGURES + 1  # the sweep figure
