"""``hneuron-lens``: one subcommand per stage, and ``run`` for the whole pipeline.

hneuron-lens run [--quick]                      # embedded default model, built-in data, offline
hneuron-lens collect --data builtin --out responses.jsonl
hneuron-lens extract --data samples.jsonl --format release --store store/
hneuron-lens train --store store/ --out probe/
hneuron-lens evaluate --probe probe/ --store store/
hneuron-lens intervene --probe probe/ --task falseqa --data falseqa_test.csv --out sweep/
hneuron-lens report runs/default [--html]                # --html: one self-contained page
hneuron-lens store store/ [--verify] [--repair]
hneuron-lens derive-sft                         # a (base, instruct) pair: Gemma-3-270M + short SFT
hneuron-lens origin --run runs/x --base gemma-3-270m --out origin/

Errors. Every user error is an :class:`~hneuron_lens.errors.HNeuronLensError`; :func:`main` prints
it as one line, ``error: <what> (<file>:<line> <field>): <what to do>``, and exits with code 2
(the mapping lives in :func:`main` only, so every subcommand gets it). Anything else is a bug: one
line saying so and exit code 1. ``-v`` logs at INFO level and prints the traceback of either.
Commands check their inputs (files, records, output paths) before they load a model, and never
replace an output that is not an artefact of the same kind (``--overwrite`` replaces one that is).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hneuron_lens.errors import DataError, HNeuronLensError, UsageError
from hneuron_lens.io import loads_json

logger = logging.getLogger("hneuron_lens")

EXIT_USER_ERROR = 2
EXIT_BUG = 1


def _emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _config(cls: Any, **kwargs: Any) -> Any:
    """Build a config dataclass; its validation errors become one-line usage errors."""
    try:
        return cls(**kwargs)
    except HNeuronLensError:
        raise
    except (ValueError, TypeError) as err:
        raise UsageError(str(err), hint="check the command's options (--help)") from None


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
"""``--device-map`` values passed to ``from_pretrained`` as they are (any other value is a file)."""


def _device_map(value: str) -> str | dict[str, Any]:
    """``--device-map``: a placement strategy, or a JSON file of module name -> device, read
    (:func:`main` calls this once, before the command runs)."""
    from hneuron_lens.io import loads_json

    if value in DEVICE_MAP_STRATEGIES:
        return value
    path = Path(value)
    if not path.is_file():
        raise UsageError(
            f"not a placement strategy and no such file: {value!r}",
            field="--device-map",
            hint=f"give one of {', '.join(DEVICE_MAP_STRATEGIES)} or a JSON file "
            '{"model.layers.0": 0, ...}',
        )
    try:
        device_map = loads_json(path.read_bytes())
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError included
        raise DataError(
            f"unreadable JSON ({type(err).__name__})",
            file=path,
            field="--device-map",
            hint='give a JSON object of module name -> device, e.g. {"model.layers.0": 0}',
        ) from None
    bad = not isinstance(device_map, dict) or not all(
        isinstance(v, (int, str)) and not isinstance(v, bool) for v in device_map.values()
    )
    if bad or not device_map:
        raise DataError(
            "not a JSON object of module name -> device (an integer GPU index or a string)",
            file=path,
            field="--device-map",
            hint='e.g. {"model.embed_tokens": 0, "model.layers.0": 0, "lm_head": 1}',
        )
    return device_map


def _load_model(args: argparse.Namespace) -> Any:
    from hneuron_lens.errors import ModelError
    from hneuron_lens.models import load_model

    device_map = getattr(args, "device_map", None)  # a strategy or a map, read by main()
    where = "--device-map" if device_map is not None else (args.device or "cpu")
    try:
        return load_model(
            args.model,
            dtype=args.dtype,
            device=args.device if device_map is None else None,
            device_map=device_map,
            allow_offload=bool(getattr(args, "allow_offload", False)),
        )
    except HNeuronLensError:
        raise
    except (OSError, ValueError, RuntimeError, AssertionError, ImportError) as err:
        # transformers / torch say "not found", "offline", "no CUDA" in many exception types
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise ModelError(
            f"cannot load model {args.model!r} on {where} ({type(err).__name__}: {first})",
            field="--model",
            hint="give 'default', 'gemma-3-270m', a .gguf file, a local Hugging Face directory "
            "or a hub id cached for offline use; check --device, --device-map and --dtype",
        ) from err


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="default",
        help="'default', 'gemma-3-270m', a .gguf file, a local HF dir or a hub id",
    )
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument(
        "--device-map",
        default=None,
        help="spread a model bigger than one GPU over several: auto | balanced | sequential or "
        "a JSON file of module -> device (instead of --device; local HF dirs and hub ids). "
        "Under torchrun, one process per machine",
    )
    p.add_argument(
        "--allow-offload",
        action="store_true",
        help="accept a device map that offloads layers to CPU memory or disk (refused by "
        "default: orders of magnitude slower)",
    )


def _add_dist_args(p: argparse.ArgumentParser, what: str) -> None:
    """``--distributed`` and ``--dist-backend``; ``what`` says what each rank does."""
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the processes torchrun / accelerate launch starts (automatic "
        f"when WORLD_SIZE > 1): {what}",
    )
    p.add_argument(
        "--dist-backend",
        default="gloo",
        choices=["gloo", "nccl"],
        help="torch.distributed backend for the ranks' few control messages (default gloo)",
    )


def _dist_env(args: argparse.Namespace) -> Any:
    """This process's :class:`~hneuron_lens.distributed.DistEnv` (from the variables torchrun /
    accelerate launch set); ``--device cuda`` becomes ``cuda:LOCAL_RANK``, one GPU per rank."""
    from hneuron_lens.distributed import DistEnv

    env = DistEnv.from_env()
    if env.is_distributed and args.device == "cuda" and getattr(args, "device_map", None) is None:
        args.device = f"cuda:{env.local_rank}"
    return env


def cmd_run(args: argparse.Namespace) -> int:
    from hneuron_lens.io import check_output_dir
    from hneuron_lens.pipeline import RunConfig, run_pipeline

    overrides: dict[str, Any] = {
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "device_map": args.device_map,  # read by main()
        "allow_offload": args.allow_offload,
        "seed": args.seed,
    }
    for name in ("out_dir", "questions", "n_questions", "k", "max_new_tokens", "batch_size"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    cfg = _config(RunConfig.quick if args.quick else RunConfig, **overrides)
    check_output_dir(cfg.out_dir, "run", resume=True, option="--out-dir")  # before the model
    if cfg.questions != "builtin":
        from hneuron_lens.data.loaders import load_qa, require_records

        require_records(load_qa(cfg.questions)[1], "question + gold answers")
    result = run_pipeline(cfg)
    _emit(result.summary())
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from hneuron_lens.collect import (
        CollectConfig,
        collect,
        is_judged_file,
        judge_collected,
        load_collected,
        save_judged,
    )
    from hneuron_lens.io import check_output_file, json_object_with

    if args.data == "builtin":
        from hneuron_lens.data.builtin import builtin_nonexistent, builtin_qa

        items = builtin_qa() + (builtin_nonexistent() if args.nonexistent else [])
    else:
        from hneuron_lens.data.loaders import load_qa, require_records

        items, report = load_qa(args.data)
        _emit(str(report))
        require_records(report, "question + gold answers")
    if args.limit:
        items = items[: args.limit]
    out = Path(args.out)
    if out.is_dir():
        raise UsageError("--out is a directory", file=out, hint="give a .jsonl file name")
    judged_path, funnel_path = out.with_suffix(".judged.jsonl"), out.with_suffix(".funnel.json")
    if args.mode == "sample":  # the derived files are checked before any model is loaded
        check_output_file(
            judged_path, "judged-samples file", recognise=is_judged_file, regenerate=True
        )
        check_output_file(
            funnel_path, "funnel file", recognise=json_object_with("asked"), regenerate=True
        )
    if out.exists() and out.stat().st_size:
        load_collected(out)  # an existing file must be a collection (resumed), checked now
    cfg = _config(
        CollectConfig,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
        mode=args.mode,
        batch_size=args.batch_size,
        seed=args.seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    from hneuron_lens.distributed import collect_distributed

    env = _dist_env(args)
    model = _load_model(args)
    items = _fit_questions(model, items, cfg, args.too_long)
    if args.distributed or env.is_distributed:
        report = collect_distributed(model, items, cfg, out, env=env, backend=args.dist_backend)
        _emit(str(report))
        if env.rank != 0:
            return 0  # rank 0 judges the merged file
    else:
        res = collect(model, items, cfg, out)
        _emit(json.dumps(res.to_dict(), indent=1, default=str))
    if args.mode == "sample":
        samples, funnel = judge_collected(load_collected(out))
        _emit(str(funnel))
        funnel.save(funnel_path)
        save_judged(samples, judged_path)
        _emit(f"{len(samples)} consistent samples -> {judged_path}; funnel -> {funnel_path}")
    return 0


def _fit_questions(model: Any, items: list[Any], cfg: Any, too_long: str) -> list[Any]:
    """Refuse (or, with ``--too-long skip``, drop) questions whose prompt plus
    ``max_new_tokens`` exceeds the model's context; prints the count."""
    from hneuron_lens.extract import max_chars_per_token
    from hneuron_lens.generation import build_prompt_ids
    from hneuron_lens.models import context_length

    n_ctx = context_length(model)
    if n_ctx is None:
        return items
    budget = n_ctx - cfg.max_new_tokens
    limit = max(budget, 0) * max_chars_per_token(model.tokenizer)
    over = []
    for it in items:
        if len(it.question) > limit:  # certainly too long: never tokenised
            over.append((it.qid, f"{len(it.question):,} characters"))
            continue
        n = len(
            build_prompt_ids(
                model.tokenizer, it.question, suffix=cfg.suffix, system=cfg.system, chat=cfg.chat
            )
        )
        if n > budget:
            over.append((it.qid, f"{n:,} tokens"))
    if not over:
        return items
    if too_long == "skip":
        _emit(
            f"--too-long skip: left out {len(over)} of {len(items)} questions longer than "
            f"the model's context ({n_ctx} tokens with {cfg.max_new_tokens} new ones)"
        )
        bad = {q for q, _ in over}
        return [it for it in items if it.qid not in bad]
    shown = ", ".join(f"{q} ({size})" for q, size in over[:3])
    raise DataError(
        f"{len(over)} of {len(items)} questions do not fit the model's context of {n_ctx} tokens "
        f"with --max-new-tokens {cfg.max_new_tokens}, e.g. {shown}",
        field="question",
        hint="shorten them, or leave them out with --too-long skip",
    )


def _load_samples(path: str, fmt: str) -> list[Any]:
    from hneuron_lens.data import loaders

    if fmt == "release":
        samples, report = loaders.load_release(path)
    else:
        samples, report = loaders.load_judged(path)
    _emit(str(report))
    loaders.require_records(
        report,
        "release (question, response, answer_tokens)"
        if fmt == "release"
        else "judged (question, response, label)",
    )
    return samples


def cmd_extract(args: argparse.Namespace) -> int:
    samples = _load_samples(args.data, args.format)  # bad input stops before torch is imported

    from hneuron_lens.cett import CETTConfig
    from hneuron_lens.extract import extract, fit_to_context
    from hneuron_lens.io import check_output_dir
    from hneuron_lens.pipeline import attach_answer_text
    from hneuron_lens.spans import SpanConfig
    from hneuron_lens.store import ActivationStore

    cfg = _config(CETTConfig, regions=tuple(args.regions.split(",")), reduce=args.reduce)
    span_cfg = _config(SpanConfig, fallback=args.fallback)
    check_output_dir(args.store, "activation_store", resume=True, option="--store")
    from hneuron_lens.distributed import extract_distributed

    env = _dist_env(args)
    model = _load_model(args)
    samples, too_long = fit_to_context(model, samples, args.too_long)  # before any parsing
    if too_long:
        _emit(f"--too-long skip: left out {len(too_long)} samples longer than the context")
    samples, missing = attach_answer_text(samples)
    if missing:
        _emit(f"{len(missing)} samples without a locatable answer phrase were skipped")
    if not samples:
        raise DataError(
            "no sample left to extract (none has a locatable answer phrase)",
            file=args.data,
            hint="check the responses and aliases, or use --fallback response",
        )
    store = ActivationStore(args.store, dtype=args.store_dtype)
    common = dict(
        span_cfg=span_cfg,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        too_long=args.too_long,
    )
    if args.distributed or env.is_distributed:
        report: Any = extract_distributed(
            model, samples, store, cfg, env=env, backend=args.dist_backend, **common
        )
    else:
        report = extract(model, samples, store, cfg, **common)
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
        raise UsageError(
            "no questions left for the suppression rule",
            field="--suppression-data",
            hint="check --suppression-data / --suppression-exclude / --suppression-limit",
        )
    model = _load_model(args)
    gen = GenerationConfig(
        max_new_tokens=args.max_new_tokens, do_sample=False, batch_size=args.batch_size
    )
    _emit(f"suppression rule: QA accuracy on {len(task.items)} questions per C")

    def fn(neurons: Any) -> float:
        return suppression_accuracy(model, neurons, task.items, gen_cfg=gen)

    return fn


def _open_store(path: str, verify: bool) -> Any:
    """A store opened for reading; ``--verify`` hashes every chunk first (cache ignored)."""
    from hneuron_lens.store import ActivationStore, StoreCorruptError

    store = ActivationStore(path, verify=verify)
    if verify and store.problems:
        raise StoreCorruptError(
            f"--verify found {len(store.problems)} damaged chunks, e.g. {store.problems[0]}",
            file=path,
            hint=f"run `hneuron-lens store {path} --repair`, then extract again to recompute them",
        )
    return store


TRAIN_RULES = ("auroc-1se", "1se", "auroc", "log-loss", "held-out", "held-out+suppression")
"""``train --rule`` choices, the default first (= ``probe.DEFAULT_RULE``; kept here so that
``--help`` imports no scikit-learn; tests/unit/test_cli.py checks they agree)."""


def _path_json(out: str) -> Path:
    return Path(out).with_name(Path(out).name + "_path.json")


def cmd_train(args: argparse.Namespace) -> int:
    from hneuron_lens.io import check_output_dir, check_output_file, json_object_with
    from hneuron_lens.probe import SparseProbe, probe_path

    if args.rule == "held-out+suppression" and (not args.Cs or args.Cs == "auto"):
        raise UsageError(
            f"--rule {args.rule} runs the model's QA task at every C",
            field="--Cs",
            hint="give --Cs (a short explicit grid)",
        )
    if args.C is not None and args.Cs:
        raise UsageError("--C fits one C, --Cs chooses among several", hint="give one of them")
    if args.solver == "torch" and args.penalty != "l1":
        raise UsageError("the torch solver fits --penalty l1 only", field="--solver")
    if args.stability and not 0.0 < args.stability_threshold <= 1.0:
        raise UsageError("must be in (0, 1]", field="--stability-threshold")
    if args.select_by == "frequency" and not args.stability:
        raise UsageError(
            "needs stability selection", field="--select-by", hint="give --stability N"
        )
    check_output_dir(args.out, "probe", overwrite=args.overwrite)  # before any work
    use_path = args.C is None
    if use_path:
        check_output_file(
            _path_json(args.out),
            "probe path",
            recognise=json_object_with("points", "chosen_index"),
            overwrite=args.overwrite,
        )
    store = _open_store(args.store, args.verify)
    train = store.split(args.train_split)
    fit_params = {
        "penalty": args.penalty,
        "mode": args.mode,
        "standardize": args.standardize,
        "class_weight": None if args.class_weight == "none" else "balanced",
        "intercept_scaling": args.intercept_scaling,
        "solver": args.solver,
    }
    if use_path:
        if args.val_split not in store.splits:
            raise UsageError(
                f"the store has no {args.val_split!r} split to choose C on",
                field="--val-split",
                hint="give --val-split, or --C to fit one C without selection",
            )
        val = store.split(args.val_split)
        suppression_fn = None
        if args.rule == "held-out+suppression":
            suppression_fn = _suppression_fn(args)
        path = probe_path(
            train,
            val,
            Cs="auto" if not args.Cs or args.Cs == "auto" else _floats(args.Cs),
            rule=args.rule,
            suppression_fn=suppression_fn,
            seed=args.seed,
            **fit_params,
        )
        _emit(str(path))
        probe = path.probe
        path.save(_path_json(args.out))
    else:
        probe = _config(SparseProbe, C=args.C, **fit_params).fit(train)
    if args.stability:
        from hneuron_lens.stability import stability_selection

        result = stability_selection(
            train,
            probe,
            n_subsamples=args.stability,
            threshold=args.stability_threshold,
            n_jobs=args.n_jobs,
            seed=args.seed,
        )
        probe.use_stability(result, select=args.select_by == "frequency")
        _emit(str(result))
    probe.save(args.out, overwrite=args.overwrite)
    _emit(str(probe.h_neurons.top(20)) if hasattr(probe.h_neurons, "top") else str(probe.h_neurons))
    _emit(f"probe saved to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hneuron_lens.io import check_output_file, json_object_with
    from hneuron_lens.probe import SparseProbe

    if args.out:
        check_output_file(
            args.out,
            "evaluation report",
            recognise=json_object_with("metrics", "n_samples", "baselines"),
            overwrite=args.overwrite,
        )
    probe = SparseProbe.load(args.probe)
    store = _open_store(args.store, args.verify)
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
        raise DataError(
            "no such file", file=path, field="--exclude", hint="give a responses.jsonl or id list"
        )
    if path.suffix == ".jsonl":
        collected = load_collected(path)
        return set(collected), {normalize_question(c.question) for c in collected.values()}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(
            "not UTF-8 text", file=path, field="--exclude", hint="give a text file of ids"
        ) from None
    ids = {line.strip() for line in text.splitlines() if line.strip()}
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
            from hneuron_lens.data.loaders import load_qa, require_records

            items, report = load_qa(data)
            _emit(str(report))
            require_records(report, "question + gold answers")
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
        if not items:
            raise DataError(
                "no questions left for the task",
                file=None if builtin else data,
                hint="check --data, --exclude and --limit",
            )
        return tasks.QATask(items) if name == "qa" else tasks.SycophancyTask(items)
    if exclude is not None:
        raise UsageError(
            f"--exclude works with the qa and sycophancy tasks, not {name!r}", field="--exclude"
        )
    if data is None:
        raise UsageError(
            f"task {name!r} needs --data",
            field="--data",
            hint="see ../shared/data/README.md for public files",
        )
    loaders = {
        "falseqa": (tasks.FalseQATask, tasks.load_falseqa),
        "faitheval": (tasks.FaithEvalTask, tasks.load_faitheval),
        "jailbreak": (tasks.JailbreakTask, tasks.load_forbidden_questions),
    }
    if name not in loaders:
        raise UsageError(f"unknown task {name!r}", field="--task")
    task_cls, load = loaders[name]
    if not Path(data).is_file():
        raise DataError("no such file", file=data, field="--data", hint="check the path")
    try:
        return task_cls(load(data, limit=limit))
    except HNeuronLensError:
        raise
    except (ValueError, KeyError, TypeError, OSError, RecursionError, csv.Error) as err:
        # the task loaders raise plain exceptions: name the file here
        raise DataError(
            f"cannot read it as a {name} file ({type(err).__name__}: {str(err)[:120]})",
            file=data,
            field="--data",
            hint=f"give the {name} file described in ../shared/data/README.md",
        ) from None


def cmd_intervene(args: argparse.Namespace) -> int:
    from hneuron_lens.generation import GenerationConfig
    from hneuron_lens.intervene import NeuronSet, alpha_sweep
    from hneuron_lens.io import check_output_dir
    from hneuron_lens.probe import SparseProbe

    if bool(args.probe) == bool(args.neurons):
        raise UsageError(
            "give exactly one of --probe DIR or --neurons FILE", field="--probe/--neurons"
        )
    check_output_dir(args.out, "sweep", resume=True)
    source = SparseProbe.load(args.probe).h_neurons if args.probe else args.neurons
    neurons = NeuronSet.coerce(source, name="h_neurons")
    task = make_task(args.task, args.data, limit=args.limit, exclude=args.exclude, seed=args.seed)
    model = _load_model(args)
    gen = _config(
        GenerationConfig,
        max_new_tokens=args.max_new_tokens,
        do_sample=False,
        batch_size=args.batch_size,
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
    from hneuron_lens.io import claim_output_dir

    out = claim_output_dir(args.out, "origin")  # new, empty or an earlier origin output
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
    hint = "give a directory written by `hneuron-lens run` (it has a manifest.json)"
    if not manifest.is_file():
        raise DataError("not a run directory: no manifest.json", file=run, hint=hint)
    try:
        m = loads_json(manifest.read_text(encoding="utf-8"))
        header = f"run {run}  (library {m.get('library_version')}, model {m['model']['name']})"
        funnel, splits = json.dumps(m["funnel"]), json.dumps(m["splits"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(
            f"not a run manifest ({type(err).__name__}: {str(err)[:80]})", file=manifest, hint=hint
        ) from None
    if args.html:
        from hneuron_lens.viz.html import write_report

        out = write_report(
            run,
            args.out,
            neuron_views=not args.no_neuron_views,
            n_neurons=args.neurons,
            n_random=args.n_random,
        )
        _emit(f"HTML report -> {out} (self-contained: open it in any browser, offline)")
        return 0
    _emit(header)
    _emit("funnel: " + funnel)
    _emit("splits: " + splits + f"  chosen C: {m.get('chosen_C')}")
    stability = _stability_line(run / "probe" / "probe.json")
    if stability:
        _emit(stability)
    report = run / "report.json"
    if report.is_file():
        _emit(report.read_text(encoding="utf-8", errors="replace")[: args.max_chars])
    return 0


def _stability_line(probe_json: Path) -> str | None:
    """One line on the saved probe's stability selection, if it has one."""
    try:
        st = loads_json(probe_json.read_text(encoding="utf-8")).get("stability")
        if not st:
            return None
        bound = st.get("expected_false_bound")
        return (
            f"stability selection: {st['n_subsamples']} refits on {st['fraction']:.0%} subsamples "
            f"at C={st['C']:.4g}; {st['n_stable']} neurons with frequency >= {st['threshold']}"
            + ("" if bound is None else f" (E[false] <= {bound:.2f}, Meinshausen-Buhlmann)")
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def cmd_store(args: argparse.Namespace) -> int:
    from hneuron_lens.store import ActivationStore, StoreCorruptError

    store = ActivationStore(args.store)
    if not args.repair:
        store.check()  # no store, an unreadable manifest: one line, exit 2
    if args.repair:
        done = store.repair()
        _emit("\n".join(done) if done else f"{args.store}: nothing to repair")
        store = ActivationStore(args.store)
    problems = store.verify() if args.verify else list(store.problems)
    _emit(json.dumps(store.info(), indent=1, default=str))
    if problems:
        raise StoreCorruptError(
            f"{len(problems)} problems, e.g. {problems[0]}",
            file=args.store,
            hint=f"run `hneuron-lens store {args.store} --repair` (damaged chunks are moved to "
            "quarantine/, never deleted), then extract again to recompute their samples",
        )
    if args.verify:
        _emit(f"{args.store}: every chunk matches its sha256 ({len(store)} samples)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hneuron-lens", description="Find, test and trace H-Neurons.")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="log at INFO level; tracebacks on errors"
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="the whole pipeline on the embedded default model, offline")
    _add_model_args(r)
    r.add_argument("--quick", action="store_true", help="small settings (under 3 minutes on CPU)")
    r.add_argument("--out-dir", dest="out_dir", default=None)
    r.add_argument(
        "--questions", default=None, help="'builtin' (default) or an open-QA/consistency file"
    )
    r.add_argument("--n-questions", type=_positive_int, default=None)
    r.add_argument("--k", type=_positive_int, default=None)
    r.add_argument("--max-new-tokens", type=_positive_int, default=None)
    r.add_argument("--batch-size", type=_positive_int, default=None)
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
    c.add_argument("--limit", type=_positive_int, default=None)
    c.add_argument("--k", type=_positive_int, default=10)
    c.add_argument("--mode", default="sample", choices=["sample", "single", "greedy"])
    c.add_argument("--max-new-tokens", type=int, default=50)
    c.add_argument("--temperature", type=float, default=1.0)
    c.add_argument("--top-k", type=int, default=50)
    c.add_argument("--top-p", type=float, default=0.9)
    c.add_argument("--batch-size", type=_positive_int, default=16)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--too-long",
        default="error",
        choices=["error", "skip"],
        help="questions whose prompt + --max-new-tokens exceed the model's context: refuse "
        "(default) or leave them out (counted)",
    )
    _add_dist_args(
        c,
        "each rank generates its share of the questions, rank 0 merges them into --out in "
        "question order and judges",
    )
    c.set_defaults(func=cmd_collect)

    e = sub.add_parser("extract", help="CETT features of judged samples into an activation store")
    _add_model_args(e)
    e.add_argument("--data", required=True)
    e.add_argument("--format", default="judged", choices=["judged", "release"])
    e.add_argument("--store", required=True)
    e.add_argument("--batch-size", type=_positive_int, default=16)
    e.add_argument(
        "--store-dtype", dest="store_dtype", default="float16", choices=["float16", "float32"]
    )
    e.add_argument("--regions", default="answer,other")
    e.add_argument("--reduce", default="mean", choices=["mean", "max"])
    e.add_argument("--fallback", default="none", choices=["none", "response"])
    e.add_argument(
        "--too-long",
        default="error",
        choices=["error", "skip", "truncate"],
        help="samples longer than the model's context: refuse (default), leave out (counted), "
        "or keep their first n_ctx tokens (recorded in the store's fingerprint)",
    )
    e.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a store written for another model/config (never a non-store directory)",
    )
    _add_dist_args(e, "each rank computes its shard, rank 0 merges into --store")
    e.set_defaults(func=cmd_extract)

    t = sub.add_parser("train", help="fit the sparse probe (optionally over a C grid)")
    _add_model_args(t)
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True)
    t.add_argument(
        "--C", type=float, default=None, help="fit this one C (no selection on --val-split)"
    )
    t.add_argument(
        "--Cs",
        default=None,
        help="comma-separated grid chosen on --val-split; default 'auto' (from the first C with "
        "a non-zero weight to 100x it; extended when the choice sits at an end)",
    )
    t.add_argument("--penalty", default="l1", choices=["l1", "l2"])
    t.add_argument(
        "--solver",
        default="liblinear",
        choices=["liblinear", "saga", "torch"],
        help="liblinear (default, the paper's), saga, or torch: an L1 solver on a working set "
        "of columns (GPU when available) that reads the store's arrays without building the "
        "training matrix (stability refits too); for very wide probes (70B-class models), "
        "fastest on a compacted store (memory maps)",
    )
    t.add_argument(
        "--rule",
        default=TRAIN_RULES[0],
        choices=TRAIN_RULES,
        help="how C is chosen on --val-split: auroc-1se (default: the sparsest C within one "
        "bootstrap SE of the best held-out AUROC; chosen by benchmarks/bench_recovery.py), "
        "1se (the same on log-loss), auroc, log-loss, held-out (the paper's: accuracy at "
        "p > 0.5), held-out+suppression (adds the model's QA accuracy with the C's H-Neurons "
        "scaled to 0; needs the model: --model, and --Cs)",
    )
    t.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="z-score every neuron on the training split (scale-free L1; default on)",
    )
    t.add_argument(
        "--class-weight",
        default="balanced",
        choices=["balanced", "none"],
        help="balanced undoes the 3:1 class ratio of 3-vs-1 training (default); none = paper",
    )
    t.add_argument(
        "--intercept-scaling",
        type=float,
        default=100.0,
        help="liblinear's intercept feature; 100 leaves the intercept unpenalised (1 = paper)",
    )
    t.add_argument(
        "--stability",
        type=int,
        default=0,
        metavar="N",
        help="stability selection: N refits on random halves at the chosen C; frequencies are "
        "shown beside the weights and saved with the probe (100 is usual; 0 skips)",
    )
    t.add_argument("--stability-threshold", type=float, default=0.6)
    t.add_argument(
        "--select-by",
        default="weight",
        choices=["weight", "frequency"],
        help="H-Neurons = positive weights (default) or frequency >= --stability-threshold",
    )
    t.add_argument("--n-jobs", type=int, default=1, help="joblib workers for --stability")
    t.add_argument(
        "--suppression-data", default="builtin", help="QA questions for the suppression rule"
    )
    t.add_argument("--suppression-limit", type=_positive_int, default=100)
    t.add_argument(
        "--suppression-exclude",
        default=None,
        help="responses.jsonl (or id list) of questions to leave out, e.g. the training run's",
    )
    t.add_argument("--max-new-tokens", type=_positive_int, default=32)
    t.add_argument("--batch-size", type=_positive_int, default=16)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--mode", default="3-vs-1", choices=["3-vs-1", "1-vs-1"])
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default="validation")
    t.add_argument("--overwrite", action="store_true", help="replace an existing probe in --out")
    t.add_argument(
        "--verify", action="store_true", help="hash every chunk of the store first (full check)"
    )
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
    v.add_argument("--n-resamples", type=_positive_int, default=1000)
    v.add_argument("--out", default=None)
    v.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    v.add_argument(
        "--verify", action="store_true", help="hash every chunk of the store first (full check)"
    )
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
        type=_positive_int,
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
    i.add_argument("--max-new-tokens", type=_positive_int, default=48)
    i.add_argument("--batch-size", type=_positive_int, default=16)
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

    rep = sub.add_parser(
        "report", help="print the summary of a run directory, or write it as HTML (--html)"
    )
    rep.add_argument("run_dir")
    rep.add_argument("--max-chars", type=int, default=20000)
    rep.add_argument(
        "--html",
        action="store_true",
        help="write one self-contained HTML report (figures, neuron views, tables with CIs)",
    )
    rep.add_argument("--out", default=None, help="HTML file (default RUN_DIR/report.html)")
    rep.add_argument(
        "--no-neuron-views",
        action="store_true",
        help="skip the circuitsvis neuron views (they load the run's model)",
    )
    rep.add_argument("--neurons", type=int, default=4, help="H-Neurons with a view each")
    rep.add_argument(
        "--n-random", type=int, default=5, help="random-neuron control refits in the ROC figure"
    )
    rep.set_defaults(func=cmd_report)

    st = sub.add_parser("store", help="an activation store's summary, full check or repair")
    st.add_argument("store")
    st.add_argument("--verify", action="store_true", help="hash every chunk (full check)")
    st.add_argument(
        "--repair",
        action="store_true",
        help="move damaged chunks to quarantine/ (never deleted) and rebuild a lost manifest",
    )
    st.set_defaults(func=cmd_store)
    return p


def _raised_by_library(err: BaseException) -> bool:
    """True when the innermost frame of ``err``'s traceback is in this package's own code: a
    deliberate ``raise ValueError("...")`` of a module not yet moved to the error hierarchy."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return (
        Path(tb.tb_frame.f_code.co_filename)
        .resolve()
        .is_relative_to(Path(__file__).resolve().parent)
    )


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def report_error(err: BaseException, verbose: bool = False) -> int:
    """Print ``err`` as the CLI does and return its exit code (2: user error, 1: bug).

    User errors: every :class:`~hneuron_lens.errors.HNeuronLensError`; an ``OSError`` naming a
    file (missing, permissions, disk full); a ``ValueError`` raised by this package's own code.
    Anything else is a bug. ``verbose`` adds the traceback.
    """
    if verbose:
        traceback.print_exception(err, file=sys.stderr)
    if isinstance(err, HNeuronLensError):
        line, code = f"error: {err}", EXIT_USER_ERROR
    elif isinstance(err, OSError) and err.filename is not None:
        reason = err.strerror or type(err).__name__
        line = f"error: {reason} ({err.filename}): check the path, its permissions and free space"
        code = EXIT_USER_ERROR
    elif isinstance(err, ValueError) and _raised_by_library(err):
        line, code = f"error: {err}: check the command's options and inputs", EXIT_USER_ERROR
    else:
        line = (
            f"error: internal error ({type(err).__name__}: {err}): this is a bug in hneuron_lens;"
            " rerun with -v for the traceback and report it"
        )
        code = EXIT_BUG
    sys.stderr.write(_one_line(line) + "\n")
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 2 user error, 1 bug, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if getattr(args, "device_map", None) is not None:  # a map file is read before anything
            args.device_map = _device_map(args.device_map)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as err:  # noqa: BLE001 - the one place errors become exit codes
        return report_error(err, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
