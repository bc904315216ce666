"""``hneuron-lens``: one subcommand per stage, and ``run`` for the whole pipeline.

hneuron-lens run [--quick]                      # embedded default model, built-in data, offline
hneuron-lens collect --data builtin --out responses.jsonl
hneuron-lens extract --data samples.jsonl --format release --store store/
hneuron-lens train --store store/ --out probe/
hneuron-lens evaluate --probe probe/ --store store/
hneuron-lens intervene --probe probe/ --task falseqa --data falseqa_test.csv --out sweep/
hneuron-lens report runs/default
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("hneuron_lens")


def _emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _load_model(args: argparse.Namespace) -> Any:
    from hneuron_lens.models import load_model

    return load_model(args.model, dtype=args.dtype, device=args.device)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="default",
        help="'default', 'gemma-3-270m', a .gguf file, a local HF dir or a hub id",
    )
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")


def cmd_run(args: argparse.Namespace) -> int:
    from hneuron_lens.pipeline import RunConfig, run_pipeline

    overrides: dict[str, Any] = {"model": args.model, "device": args.device, "seed": args.seed}
    for name in ("out_dir", "questions", "n_questions", "k", "max_new_tokens", "batch_size"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    cfg = RunConfig.quick(**overrides) if args.quick else RunConfig(**overrides)
    result = run_pipeline(cfg)
    _emit(result.summary())
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from hneuron_lens.collect import CollectConfig, collect, judge_collected, load_collected

    if args.data == "builtin":
        from hneuron_lens.data.builtin import builtin_nonexistent, builtin_qa

        items = builtin_qa() + (builtin_nonexistent() if args.nonexistent else [])
    else:
        from hneuron_lens.data.loaders import load_qa

        items, report = load_qa(args.data)
        _emit(str(report))
    if args.limit:
        items = items[: args.limit]
    cfg = CollectConfig(
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        mode=args.mode,
        batch_size=args.batch_size,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    model = _load_model(args)
    res = collect(model, items, cfg, args.out)
    _emit(json.dumps(res.to_dict(), indent=1, default=str))
    if args.mode == "sample":
        samples, funnel = judge_collected(load_collected(args.out))
        _emit(str(funnel))
        funnel_path = Path(args.out).with_suffix(".funnel.json")
        funnel.save(funnel_path)
        out = Path(args.out).with_suffix(".judged.jsonl")
        with open(out, "w") as f:
            for s in samples:
                f.write(json.dumps(s.to_dict()) + "\n")
        _emit(f"{len(samples)} consistent samples -> {out}; funnel -> {funnel_path}")
    return 0


def _load_samples(path: str, fmt: str) -> list[Any]:
    from hneuron_lens.data import loaders

    if fmt == "release":
        samples, report = loaders.load_release(path)
    else:
        samples, report = loaders.load_judged(path)
    _emit(str(report))
    return samples


def cmd_extract(args: argparse.Namespace) -> int:
    from hneuron_lens.cett import CETTConfig
    from hneuron_lens.extract import extract
    from hneuron_lens.pipeline import attach_answer_text
    from hneuron_lens.spans import SpanConfig
    from hneuron_lens.store import ActivationStore

    samples = _load_samples(args.data, args.format)
    samples, missing = attach_answer_text(samples)
    if missing:
        _emit(f"{len(missing)} samples without a locatable answer phrase were skipped")
    model = _load_model(args)
    store = ActivationStore(args.store, dtype=args.store_dtype)
    cfg = CETTConfig(regions=tuple(args.regions.split(",")), reduce=args.reduce)
    report = extract(
        model,
        samples,
        store,
        cfg,
        span_cfg=SpanConfig(fallback=args.fallback),
        batch_size=args.batch_size,
    )
    _emit(str(report))
    return 0


def _suppression_fn(args: argparse.Namespace) -> Any:
    """QA accuracy with a C's H-Neurons scaled to 0, on held-out questions (greedy)."""
    from hneuron_lens.generation import GenerationConfig
    from hneuron_lens.intervene import suppression_accuracy

    task = make_task(
        "qa",
        args.suppression_data,
        limit=args.suppression_limit,
        exclude=args.suppression_exclude,
        seed=args.seed,
    )
    if not task.items:
        raise ValueError("no questions left for the suppression rule (see --suppression-*)")
    model = _load_model(args)
    gen = GenerationConfig(
        max_new_tokens=args.max_new_tokens, do_sample=False, batch_size=args.batch_size
    )
    _emit(f"suppression rule: QA accuracy on {len(task.items)} questions per C")

    def fn(neurons: Any) -> float:
        return suppression_accuracy(model, neurons, task.items, gen_cfg=gen)

    return fn


def cmd_train(args: argparse.Namespace) -> int:
    from hneuron_lens.probe import SparseProbe, probe_path
    from hneuron_lens.store import ActivationStore

    store = ActivationStore(args.store)
    train = store.split(args.train_split)
    if args.rule != "held-out" and not args.Cs:
        raise ValueError(f"--rule {args.rule} chooses among C values: give --Cs")
    if args.Cs:
        val = store.split(args.val_split)
        suppression_fn = None
        if args.rule == "held-out+suppression":
            suppression_fn = _suppression_fn(args)
        path = probe_path(
            train,
            val,
            Cs=_floats(args.Cs),
            penalty=args.penalty,
            mode=args.mode,
            rule=args.rule,
            suppression_fn=suppression_fn,
        )
        _emit(str(path))
        probe = path.probe
        path.save(Path(args.out).with_name(Path(args.out).name + "_path.json"))
    else:
        probe = SparseProbe(C=args.C, penalty=args.penalty, mode=args.mode).fit(train)
    probe.save(args.out)
    _emit(str(probe.h_neurons.top(20)) if hasattr(probe.h_neurons, "top") else str(probe.h_neurons))
    _emit(f"probe saved to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hneuron_lens.probe import SparseProbe
    from hneuron_lens.store import ActivationStore

    probe = SparseProbe.load(args.probe)
    store = ActivationStore(args.store)
    train = store.split(args.train_split) if args.train_split else None
    val = store.split(args.val_split) if args.val_split else None
    report = probe.evaluate(
        store.split(args.split),
        val_split=val,
        train=train,
        n_random=args.n_random if train else 0,
        n_resamples=args.n_resamples,
    )
    _emit(str(report))
    if args.out:
        report.save(args.out)
    return 0


def excluded_questions(path: str | Path) -> tuple[set[str], set[str]]:
    """Question ids and normalised question texts to keep out of a task.

    ``path`` is a collection file (``responses.jsonl`` of ``hneuron-lens run`` / ``collect``:
    the questions a probe was trained on) or a text file with one question id per line.
    """
    from hneuron_lens.collect import load_collected
    from hneuron_lens.data.splits import normalize_question

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--exclude: {path} not found")
    if path.suffix == ".jsonl":
        collected = load_collected(path)
        return set(collected), {normalize_question(c.question) for c in collected.values()}
    ids = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    return ids, set()


def make_task(
    name: str,
    data: str | None,
    limit: int | None = None,
    exclude: str | Path | None = None,
    seed: int = 0,
) -> Any:
    """Build a task by name from its data file (``builtin`` for ``qa`` / ``sycophancy``).

    For ``qa`` / ``sycophancy``, ``exclude`` drops questions listed in a collection file or an
    id list (matched by id and by normalised question text), so a causal run can use questions
    the probe never saw; the number dropped is printed. ``limit`` then keeps the first ``limit``
    items of a file, or a seeded random ``limit`` of the built-in set (which is ordered by topic).
    """
    import random

    from hneuron_lens import tasks

    if name in ("qa", "sycophancy"):
        builtin = data in (None, "builtin")
        if builtin:
            from hneuron_lens.data.builtin import builtin_qa

            items = builtin_qa()
        else:
            from hneuron_lens.data.loaders import load_qa

            items, report = load_qa(data)
            _emit(str(report))
        if exclude is not None:
            from hneuron_lens.data.splits import normalize_question

            ids, questions = excluded_questions(exclude)
            kept = [
                i
                for i in items
                if i.qid not in ids and normalize_question(i.question) not in questions
            ]
            _emit(f"--exclude {exclude}: dropped {len(items) - len(kept)} of {len(items)} items")
            items = kept
        if limit and builtin and limit < len(items):
            chosen = set(random.Random(seed).sample(range(len(items)), limit))
            items = [it for j, it in enumerate(items) if j in chosen]
        elif limit:
            items = items[:limit]
        return tasks.QATask(items) if name == "qa" else tasks.SycophancyTask(items)
    if exclude is not None:
        raise ValueError(f"--exclude works with the qa and sycophancy tasks, not {name!r}")
    if data is None:
        raise ValueError(
            f"task {name!r} needs --data (see ../shared/data/README.md for public files)"
        )
    if name == "falseqa":
        return tasks.FalseQATask(tasks.load_falseqa(data, limit=limit))
    if name == "faitheval":
        return tasks.FaithEvalTask(tasks.load_faitheval(data, limit=limit))
    if name == "jailbreak":
        return tasks.JailbreakTask(tasks.load_forbidden_questions(data, limit=limit))
    raise ValueError(f"unknown task {name!r}")


def cmd_intervene(args: argparse.Namespace) -> int:
    from hneuron_lens.generation import GenerationConfig
    from hneuron_lens.intervene import NeuronSet, alpha_sweep
    from hneuron_lens.probe import SparseProbe

    if bool(args.probe) == bool(args.neurons):
        raise ValueError("give exactly one of --probe DIR or --neurons FILE")
    source = SparseProbe.load(args.probe).h_neurons if args.probe else args.neurons
    neurons = NeuronSet.coerce(source, name="h_neurons")
    task = make_task(args.task, args.data, limit=args.limit, exclude=args.exclude, seed=args.seed)
    model = _load_model(args)
    gen = GenerationConfig(
        max_new_tokens=args.max_new_tokens, do_sample=False, batch_size=args.batch_size
    )
    report = alpha_sweep(
        model,
        neurons,
        task,
        alphas=_floats(args.alphas),
        controls=args.controls,
        gen_cfg=gen,
        out_dir=args.out,
        seed=args.seed,
    )
    _emit(str(report))
    return 0


def cmd_derive_sft(args: argparse.Namespace) -> int:
    from hneuron_lens.derive import DeriveConfig, derive_sft

    cfg = DeriveConfig(
        base=args.base,
        n_questions=args.n_questions,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    derived = derive_sft(cfg, out_dir=args.out, force=args.force)
    _emit(str(derived))
    _emit(f"load it with: hl.load_model({str(derived.path)!r})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    manifest = run / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: is {run} an 'hneuron-lens run' directory?")
    m = json.loads(manifest.read_text())
    _emit(f"run {run}  (library {m.get('library_version')}, model {m['model']['name']})")
    _emit("funnel: " + json.dumps(m["funnel"]))
    _emit("splits: " + json.dumps(m["splits"]) + f"  chosen C: {m.get('chosen_C')}")
    report = run / "report.json"
    if report.is_file():
        _emit(report.read_text()[: args.max_chars])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hneuron-lens", description="Find, test and trace H-Neurons.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="the whole pipeline on the embedded default model, offline")
    _add_model_args(r)
    r.add_argument("--quick", action="store_true", help="small settings (under 3 minutes on CPU)")
    r.add_argument("--out-dir", dest="out_dir", default=None)
    r.add_argument(
        "--questions", default=None, help="'builtin' (default) or an open-QA/consistency file"
    )
    r.add_argument("--n-questions", type=int, default=None)
    r.add_argument("--k", type=int, default=None)
    r.add_argument("--max-new-tokens", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=None)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser(
        "collect", help="sample k responses per question, judge, keep consistent ones"
    )
    _add_model_args(c)
    c.add_argument(
        "--data",
        default="builtin",
        help="'builtin' or an open-QA file (.jsonl/.json/.parquet/.csv)",
    )
    c.add_argument("--out", required=True, help="append-only JSONL of responses (resumable)")
    c.add_argument(
        "--nonexistent", action="store_true", help="add the fabricated-entity questions (builtin)"
    )
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--k", type=int, default=10)
    c.add_argument("--mode", default="sample", choices=["sample", "single", "greedy"])
    c.add_argument("--max-new-tokens", type=int, default=50)
    c.add_argument("--temperature", type=float, default=1.0)
    c.add_argument("--top-k", type=int, default=50)
    c.add_argument("--top-p", type=float, default=0.9)
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_collect)

    e = sub.add_parser("extract", help="CETT features of judged samples into an activation store")
    _add_model_args(e)
    e.add_argument("--data", required=True)
    e.add_argument("--format", default="judged", choices=["judged", "release"])
    e.add_argument("--store", required=True)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument(
        "--store-dtype", dest="store_dtype", default="float16", choices=["float16", "float32"]
    )
    e.add_argument("--regions", default="answer,other")
    e.add_argument("--reduce", default="mean", choices=["mean", "max"])
    e.add_argument("--fallback", default="none", choices=["none", "response"])
    e.set_defaults(func=cmd_extract)

    t = sub.add_parser("train", help="fit the sparse probe (optionally over a C grid)")
    _add_model_args(t)
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--C", type=float, default=1.0)
    t.add_argument("--Cs", default=None, help="comma-separated grid, chosen on --val-split")
    t.add_argument("--penalty", default="l1", choices=["l1", "l2"])
    t.add_argument(
        "--rule",
        default="held-out",
        choices=["held-out", "held-out+suppression"],
        help="how --Cs is chosen; held-out+suppression adds the model's QA accuracy with the "
        "C's H-Neurons scaled to 0 (needs the model: --model)",
    )
    t.add_argument(
        "--suppression-data", default="builtin", help="QA questions for the suppression rule"
    )
    t.add_argument("--suppression-limit", type=int, default=100)
    t.add_argument(
        "--suppression-exclude",
        default=None,
        help="responses.jsonl (or id list) of questions to leave out, e.g. the training run's",
    )
    t.add_argument("--max-new-tokens", type=int, default=32)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--mode", default="3-vs-1", choices=["3-vs-1", "1-vs-1"])
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default="validation")
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("evaluate", help="metrics with bootstrap CIs and random-neuron controls")
    v.add_argument("--probe", required=True)
    v.add_argument("--store", required=True)
    v.add_argument("--split", default="test")
    v.add_argument(
        "--train-split", default="train", help="for the random-neuron controls ('' to skip)"
    )
    v.add_argument(
        "--val-split", default="validation", help="for the Youden threshold ('' to skip)"
    )
    v.add_argument("--n-random", type=int, default=20)
    v.add_argument("--n-resamples", type=int, default=1000)
    v.add_argument("--out", default=None)
    v.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("intervene", help="alpha sweep on a task, beside random-neuron controls")
    _add_model_args(i)
    i.add_argument("--probe", default=None)
    i.add_argument("--neurons", default=None, help="a neuron-set JSON/CSV instead of --probe")
    i.add_argument(
        "--task", required=True, choices=["falseqa", "faitheval", "sycophancy", "jailbreak", "qa"]
    )
    i.add_argument("--data", default=None, help="task file ('builtin' for qa/sycophancy)")
    i.add_argument(
        "--limit",
        type=int,
        default=None,
        help="first N items of a file; a seeded random N of the built-in set",
    )
    i.add_argument(
        "--exclude",
        default=None,
        help="qa/sycophancy: drop the questions of this responses.jsonl (or id list), e.g. the "
        "run the probe was trained on",
    )
    i.add_argument("--alphas", default="0,0.5,1,1.5,2,2.5,3")
    i.add_argument("--controls", type=int, default=5)
    i.add_argument("--max-new-tokens", type=int, default=48)
    i.add_argument("--batch-size", type=int, default=16)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", required=True)
    i.set_defaults(func=cmd_intervene)

    ds = sub.add_parser(
        "derive-sft",
        help="fine-tune the Gemma-3-270M base's MLPs on chat-formatted built-in QA (cached): "
        "a real base/instruct pair for 'origin'",
    )
    ds.add_argument("--base", default="gemma-3-270m", help="embedded model key or local HF dir")
    ds.add_argument("--n-questions", type=int, default=300, help="built-in questions for the SFT")
    ds.add_argument("--epochs", type=int, default=2)
    ds.add_argument("--batch-size", type=int, default=8)
    ds.add_argument("--lr", type=float, default=5e-5)
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--out", default=None, help="output directory (default: the user cache)")
    ds.add_argument("--force", action="store_true", help="retrain even if a valid copy exists")
    ds.set_defaults(func=cmd_derive_sft)

    rep = sub.add_parser("report", help="print the summary of a run directory")
    rep.add_argument("run_dir")
    rep.add_argument("--max-chars", type=int, default=20000)
    rep.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
