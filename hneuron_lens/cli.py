"""``hneuron-lens``: one subcommand per stage, and ``run`` for the whole pipeline.

hneuron-lens run [--quick]                      # embedded default model, built-in data, offline
hneuron-lens collect --data builtin --out responses.jsonl
hneuron-lens extract --data samples.jsonl --format release --store store/
hneuron-lens train --store store/ --out probe/
hneuron-lens evaluate --probe probe/ --store store/
hneuron-lens intervene --probe probe/ --task falseqa --data falseqa_test.csv --out sweep/
hneuron-lens report runs/default
hneuron-lens derive-sft                         # a (base, instruct) pair: Gemma-3-270M + short SFT
hneuron-lens origin --run runs/x --base gemma-3-270m --out origin/
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


_ORIGIN_FILES = {
    "origin.json",
    "transfer.json",
    "transfer_roc.png",
    "drift",
    "drift_ranks.png",
    "drift_ranks_layer.png",
    "layer_drift.png",
    "base_store",
}


def _origin_out(path: str) -> Path:
    """The output directory of ``origin``: new, or holding only what ``origin`` writes."""
    from hneuron_lens.errors import OutputError

    out = Path(path)
    if out.exists():
        foreign = [p.name for p in out.iterdir() if p.name not in _ORIGIN_FILES]
        if foreign:
            raise OutputError(
                f"{out} holds files 'origin' did not write: {sorted(foreign)[:5]}",
                file=out,
                hint="choose a new --out directory; nothing was changed",
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _origin_samples(args: argparse.Namespace, store: Any) -> tuple[list[Any], list[Any]]:
    """The probe's evaluation and training samples, checked against the store's hashes.

    From a run directory (``--run``): the run's responses are judged again exactly as the
    pipeline did; otherwise from a judged file (``--samples``).
    """
    from hneuron_lens.errors import DataError
    from hneuron_lens.extract import sample_sha256

    if args.samples:
        samples = _load_samples(args.samples, "judged")
        source = args.samples
    else:
        from hneuron_lens.collect import judge_collected, load_collected
        from hneuron_lens.pipeline import attach_answer_text

        responses = Path(args.run) / "responses.jsonl"
        if not responses.is_file():
            raise DataError("no responses.jsonl in the run directory", file=responses)
        samples, _ = judge_collected(load_collected(responses))
        samples, _ = attach_answer_text(samples)
        source = str(responses)
    by_id = {s.qid: s for s in samples}
    picked = []
    for name in (args.split, args.train_split):
        ids = store.split(name).ids
        missing = [i for i in ids if i not in by_id]
        changed = [
            i
            for i in ids
            if i in by_id and store.sample_hash(i) not in (None, sample_sha256(by_id[i]))
        ]
        if missing or changed:
            raise DataError(
                f"{len(missing)} samples of split {name!r} are missing from {source} and "
                f"{len(changed)} differ from the ones stored (e.g. {(missing + changed)[:3]})",
                file=source,
                hint="pass the judged samples the store was extracted from (--samples)",
            )
        picked.append([by_id[i] for i in ids])
    return picked[0], picked[1]


def cmd_origin(args: argparse.Namespace) -> int:
    import platform
    import time

    from hneuron_lens import __version__
    from hneuron_lens.derive import assert_no_sft_leakage
    from hneuron_lens.errors import DataError
    from hneuron_lens.io import atomic_write_text
    from hneuron_lens.origin import transfer, weight_drift
    from hneuron_lens.probe import SparseProbe
    from hneuron_lens.store import ActivationStore
    from hneuron_lens.viz.origin import plot_drift_ranks, plot_layer_drift, plot_transfer_roc
    from hneuron_lens.viz.style import save_figure

    run = Path(args.run) if args.run else None
    probe_dir = args.probe or (run / "probe" if run else None)
    store_dir = args.store or (run / "store" if run else None)
    instruct = args.instruct
    if instruct is None and run is not None and (run / "manifest.json").is_file():
        instruct = json.loads((run / "manifest.json").read_text())["config"]["model"]
    if probe_dir is None or instruct is None:
        raise DataError(
            "origin needs --run RUN_DIR, or --probe, --store, --samples and --instruct",
            field="--run",
        )
    out = _origin_out(args.out)
    probe = SparseProbe.load(probe_dir)
    summary: dict[str, Any] = {
        "library_version": __version__,
        "python": platform.python_version(),
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "instruct": str(instruct),
        "base": args.base,
        "n_h_neurons": len(probe.h_neurons),
        "seconds": {},
    }
    if not args.no_transfer:
        if store_dir is None:
            raise DataError(
                "the transfer needs the instruct store (--store or --run)", field="--store"
            )
        store = ActivationStore(store_dir)
        evaluation, training = _origin_samples(args, store)
        n_sft = (
            assert_no_sft_leakage(instruct, evaluation + training) if Path(instruct).is_dir() else 0
        )
        summary["leakage_check"] = {
            "sft_questions": n_sft,
            "samples_checked": len(evaluation) + len(training),
            "overlap": 0,
        }
        if n_sft:
            _emit(
                f"leakage check: none of {len(evaluation) + len(training)} samples is one of the {n_sft} SFT questions"
            )
        t = time.perf_counter()
        instruct_model = None
        if args.format_control:
            instruct_model = _load_model(
                argparse.Namespace(model=instruct, dtype=args.dtype, device=args.device)
            )
        base_model = _load_model(
            argparse.Namespace(model=args.base, dtype=args.dtype, device=args.device)
        )
        report = transfer(
            probe,
            base_model,
            evaluation,
            instruct=store.split(args.split),
            train=store.split(args.train_split),
            base_train=training if args.ceiling == "train" else None,
            format_control=instruct_model,
            base_store=ActivationStore(out / "base_store", dtype=store.dtype),
            batch_size=args.batch_size,
            n_random=args.n_random,
            n_resamples=args.n_resamples,
            seed=args.seed,
        )
        summary["seconds"]["transfer"] = time.perf_counter() - t
        report.save(out / "transfer.json")
        save_figure(plot_transfer_roc(report), out / "transfer_roc.png")
        summary["transfer"] = {
            "n": report.n,
            "base_auroc": report.base.auroc.to_dict(),
            "instruct_auroc": None if report.instruct is None else report.instruct.auroc.to_dict(),
            "format_control_auroc": None
            if report.format_control is None
            else report.format_control.auroc.to_dict(),
            "random": None if report.random is None else report.random.to_dict(),
            "ceiling_auroc": None if report.ceiling is None else report.ceiling.auroc.to_dict(),
        }
        _emit(str(report))
        del base_model, instruct_model
    if not args.no_drift:
        t = time.perf_counter()
        drift = weight_drift(
            args.base,
            instruct,
            probe.h_neurons,
            n_permutations=args.n_permutations,
            n_resamples=args.n_resamples,
            alternative=args.alternative,
            seed=args.seed,
        )
        summary["seconds"]["drift"] = time.perf_counter() - t
        drift.save(out / "drift")
        save_figure(plot_drift_ranks(drift, "global"), out / "drift_ranks.png")
        save_figure(plot_drift_ranks(drift, "layer"), out / "drift_ranks_layer.png")
        save_figure(plot_layer_drift(drift), out / "layer_drift.png")
        summary["drift"] = {v: t.to_dict() for v, t in drift.tests.items()}
        summary["drift_notes"] = drift.notes
        _emit(str(drift))
    atomic_write_text(out / "origin.json", json.dumps(summary, indent=1, default=str))
    _emit(f"origin analysis written to {out}")
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
        chat_template=None if args.chat_template == "own" else args.chat_template,
    )
    derived = derive_sft(cfg, out_dir=args.out, force=args.force)
    _emit(str(derived))
    _emit(f"load it with: hl.load_model({str(derived.path)!r})")
    if args.write_questions:
        from hneuron_lens.derive import analysis_questions, write_questions

        items = analysis_questions(cfg, nonexistent=False)
        write_questions(items, args.write_questions)
        _emit(
            f"{len(items)} built-in questions the SFT never saw -> {args.write_questions} "
            f"(hneuron-lens run --model {derived.path} --questions {args.write_questions})"
        )
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

    o = sub.add_parser(
        "origin",
        help="trace H-Neurons to the base checkpoint: probe transfer and per-neuron weight drift",
    )
    o.add_argument(
        "--run", default=None, help="an 'hneuron-lens run' directory on the instruct model"
    )
    o.add_argument(
        "--base", required=True, help="base checkpoint: embedded key, local HF dir, hub id"
    )
    o.add_argument(
        "--instruct", default=None, help="instruct checkpoint (default: the model of --run)"
    )
    o.add_argument("--probe", default=None, help="probe directory (default: RUN/probe)")
    o.add_argument("--store", default=None, help="instruct feature store (default: RUN/store)")
    o.add_argument("--samples", default=None, help="judged samples (default: judged from RUN)")
    o.add_argument("--split", default="test", help="the samples the transfer scores")
    o.add_argument("--train-split", default="train", help="for the random-set refits")
    o.add_argument(
        "--out", required=True, help="output directory (new, or an earlier origin output)"
    )
    o.add_argument("--dtype", default="float32", help="base model dtype for the transfer")
    o.add_argument("--device", default="cpu", help="base model device for the transfer")
    o.add_argument("--batch-size", type=int, default=16)
    o.add_argument("--n-random", type=int, default=20, help="random layer-matched sets")
    o.add_argument(
        "--ceiling",
        default="train",
        choices=["train", "cv"],
        help="the probe trained on base features: on the training split's base features "
        "(costs their forward passes on the base model) or 5-fold CV on the scored samples",
    )
    o.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples")
    o.add_argument("--n-permutations", type=int, default=10000, help="drift permutation null")
    o.add_argument("--alternative", default="greater", choices=["greater", "less", "two-sided"])
    o.add_argument("--seed", type=int, default=0)
    o.add_argument(
        "--format-control",
        action="store_true",
        help="also score the instruct model under the base prompt (loads the instruct model): "
        "what the prompt format alone costs",
    )
    o.add_argument("--no-transfer", action="store_true", help="drift only (no model is loaded)")
    o.add_argument("--no-drift", action="store_true", help="transfer only")
    o.set_defaults(func=cmd_origin)

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
    ds.add_argument(
        "--chat-template",
        default="gemma",
        choices=["gemma", "own"],
        help="Gemma's turn format, or the tokenizer's own template",
    )
    ds.add_argument("--out", default=None, help="output directory (default: the user cache)")
    ds.add_argument("--force", action="store_true", help="retrain even if a valid copy exists")
    ds.add_argument(
        "--write-questions",
        default=None,
        help="also write the built-in questions the SFT never saw to this JSONL file",
    )
    ds.set_defaults(func=cmd_derive_sft)

    rep = sub.add_parser("report", help="print the summary of a run directory")
    rep.add_argument("run_dir")
    rep.add_argument("--max-chars", type=int, default=20000)
    rep.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from hneuron_lens.errors import HNeuronLensError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError, HNeuronLensError) as err:
        logger.error("%s", err)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
