"""Load and save checkpoints in the Hugging Face layout (config.json + safetensors, sharded or not)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unmask.models.config import ConfigError, LLaDAConfig
from unmask.models.dream import DreamModel
from unmask.models.dream_config import DreamConfig
from unmask.models.llada import LLaDAModel
from unmask.models.llada2 import LLaDA2Model
from unmask.models.llada2_config import LLaDA2Config
from unmask.models.llada_moe import LLaDAMoEModel
from unmask.models.llada_moe_config import LLaDAMoEConfig
from unmask.models.quantize import check_mode, prepare_quantized, quantize_model

# config.json's ``model_type`` -> (config class with ``from_dict``, model class). Every architecture
# unmask builds natively is listed here; the model class takes the config and has the checkpoint's names.
MODEL_TYPES: dict[str, tuple[type, type[torch.nn.Module]]] = {
    "llada": (LLaDAConfig, LLaDAModel),
    "dream": (DreamConfig, DreamModel),  # Dream-org/Dream-v0-*-7B say "Dream"; matched case-insensitively
    "lladamoe": (LLaDAMoEConfig, LLaDAMoEModel),
    "llada2_moe": (LLaDA2Config, LLaDA2Model),  # inclusionAI/LLaDA2.0-*, LLaDA2.1-*
}
# config.json ``architectures`` that pick the model type over ``model_type``: LLaDA-MoE's checkpoints say
# ``model_type: llada`` like the dense LLaDA (dllm's copies say ``lladamoe``).
ARCHITECTURES: dict[str, str] = {"LLaDAMoEModelLM": "lladamoe", "LLaDAMoEModel": "lladamoe",
                                 "LLaDA2MoeModelLM": "llada2_moe"}

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "float64": torch.float64,
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A model folder or hub id that does not hold a loadable checkpoint."""


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` -> ``torch.bfloat16``; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (allowed: {', '.join(sorted(_DTYPES))})")
    return _DTYPES[dtype]


def resolve_model_path(path_or_id: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a hub id ``org/name`` downloaded (or found in the HF cache)."""
    if not isinstance(path_or_id, (str, os.PathLike)) or isinstance(os.fspath(path_or_id), bytes):
        raise CheckpointError(f"model must be a folder path or a hub id 'org/name', got {path_or_id!r}")
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"model path {str(path)!r} is a file; expected a folder with config.json")
    name = str(path_or_id)
    if not _HUB_ID.match(name):
        raise CheckpointError(f"model path {name!r} does not exist and is not a hub id of the form 'org/name'")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "merges.txt"]  # merges: Dream's BPE
    try:
        return Path(snapshot_download(repo_id=name, allow_patterns=patterns))
    except Exception as err:  # offline, unknown repo, gated, ...
        try:
            return Path(snapshot_download(repo_id=name, allow_patterns=patterns, local_files_only=True))
        except Exception:
            raise CheckpointError(
                f"model {name!r} is not a local folder and could not be fetched from the Hugging Face hub "
                f"({type(err).__name__}: {err})"
            ) from err


def model_class(config: object) -> type[torch.nn.Module]:
    """The model class that builds ``config`` (looked up by its ``model_type``)."""
    for config_cls, model_cls in MODEL_TYPES.values():
        if type(config) is config_cls:
            return model_cls
    raise TypeError(f"no model class for config type {type(config).__name__}")


def read_config(folder: Path):
    """The config object of a checkpoint folder, built by the class registered for its ``model_type``."""
    file = folder / "config.json"
    if not file.is_file():
        raise CheckpointError(f"no config.json in {str(folder)!r}")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{str(file)!r} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(file)!r} must hold a JSON object, got {type(data).__name__}")
    model_type = data.get("model_type")
    architectures = data.get("architectures")
    if isinstance(architectures, list):
        model_type = next((ARCHITECTURES[a] for a in architectures if a in ARCHITECTURES), model_type)
    if model_type is None:
        raise CheckpointError(f"{str(file)!r} has no 'model_type' (supported: {', '.join(MODEL_TYPES)})")
    entry = MODEL_TYPES.get(str(model_type).lower())
    if entry is None:
        raise CheckpointError(
            f"{str(file)!r}: model_type {model_type!r} is not supported (supported: {', '.join(MODEL_TYPES)})"
        )
    try:
        return entry[0].from_dict(data)
    except ConfigError as err:
        raise CheckpointError(f"{str(file)!r}: {err}") from err


def _weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{str(index)!r} is not a valid safetensors index: {err}") from err
        files = [folder / name for name in sorted(set(weight_map.values()))]
    elif (folder / WEIGHTS_NAME).is_file():
        files = [folder / WEIGHTS_NAME]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no safetensors weights in {str(folder)!r} (expected {WEIGHTS_NAME} or {INDEX_NAME})")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"weight files listed in the index are missing: {missing}")
    return files


def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"cannot read weights {str(file)!r}: {err}") from err
    return state


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, else the CPU; a named device must exist here. Under torchrun
    (``LOCAL_RANK`` set) an unnumbered ``cuda`` is ``cuda:LOCAL_RANK``: one GPU per process."""
    if device in (None, "", "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:  # ValueError: bytes that are not UTF-8
        raise ValueError(f"unknown device {device!r} (allowed: cpu, cuda, cuda:N, auto)") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine (use cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        local_rank = os.environ.get("LOCAL_RANK", "")
        if device.index is None and local_rank.isdigit():  # torchrun: one GPU per process of a node
            device = torch.device("cuda", int(local_rank) % torch.cuda.device_count())
    elif device.type not in ("cpu", "meta"):
        raise ValueError(f"device {str(device)!r} is not supported (allowed: cpu, cuda, cuda:N, auto)")
    return device


def default_dtype(config, device: torch.device) -> torch.dtype:
    """The checkpoint's dtype on an accelerator; float32 on the CPU (bf16 matmuls are slow there)."""
    if device.type == "cpu":
        return torch.float32
    return _DTYPES.get(str(config.torch_dtype), torch.bfloat16)


def read_quantization(folder: Path) -> dict | None:
    """config.json's ``quantization_config`` (a checkpoint saved quantized by unmask), or None."""
    return json.loads((folder / "config.json").read_text()).get("quantization_config")


def is_quantized_tensor(name: str, tensor: torch.Tensor) -> bool:
    """A quantized weight (int8, packed int4, float8) or its float32 scales: kept as stored."""
    return name.endswith(".weight_scale") or not (tensor.is_floating_point() and tensor.element_size() >= 2)


def load_model(
    path_or_id: str | os.PathLike,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    quantize: str | None = None,
    quantize_head: bool = False,
) -> torch.nn.Module:
    """Build the model (its class chosen by ``model_type``) from a folder or hub id; load its weights by name.

    ``quantize`` (int8 | int4 | fp8): quantize its linear layers at load (``models/quantize.py``); a checkpoint
    saved quantized loads as it was saved (``quantize`` must then be None or its own mode)."""
    folder = resolve_model_path(path_or_id)
    config = read_config(folder)
    device = resolve_device(device)
    dtype = parse_dtype(dtype) or default_dtype(config, device)
    stored = read_quantization(folder)
    if quantize is not None:
        check_mode(quantize, device)
        if stored is not None and stored.get("mode") != quantize:
            raise CheckpointError(f"checkpoint {str(folder)!r} is saved quantized as {stored.get('mode')!r}; "
                                  f"load it with quantize=None or {stored.get('mode')!r}, not {quantize!r}")
    state = load_state_dict(folder)
    with torch.device("meta"):
        model = model_class(config)(config)
    if stored is not None:
        try:
            prepare_quantized(model, stored)
        except ValueError as err:
            raise CheckpointError(f"checkpoint {str(folder)!r}: {err}") from None
    expected = {name: p.shape for name, p in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(folder)!r} does not match the {config.model_type} layout: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise CheckpointError(f"weight {name} has shape {tuple(state[name].shape)}, config implies {tuple(shape)}")
    keep = getattr(model, "float32_buffers", ())  # buffers the reference keeps in float32 (LLaDA2's expert_bias)
    state = {name: t.to(device) if is_quantized_tensor(name, t)
             else t.to(device=device, dtype=torch.float32 if name.endswith(keep) and keep else dtype)
             for name, t in state.items()}
    for name, tensor in state.items():  # one pass over the weights, where they already are
        if tensor.is_floating_point() and tensor.element_size() >= 2 and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"checkpoint {str(folder)!r}: weight {name} holds {bad} non-finite value(s) "
                                  f"(NaN or inf) of {tensor.numel()}; the checkpoint is broken")
    model.load_state_dict(state, assign=True)
    model = model.eval().requires_grad_(False)
    if quantize is not None and stored is None:
        quantize_model(model, quantize, head=quantize_head)
    return model


def available_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory, or the host's MemAvailable capped by this
    process's cgroup limit; None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = open(limit_file).read().strip(), int(open(usage_file).read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            free = min(free if free is not None else int(limit), int(limit) - usage)
        break
    return free


def check_memory(needed: int, device: torch.device, what: str) -> None:
    """A ``ValueError`` naming both sizes where ``needed`` bytes cannot fit on ``device`` (instead of an
    out-of-memory kill or traceback half way through)."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise ValueError(f"{what} needs {needed / 2**30:.1f} GiB on {device}, only {max(free, 0) / 2**30:.1f} GiB "
                         "is available; pick a smaller shape, another device or free memory")


def random_model(config, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu",
                 seed: int = 0) -> torch.nn.Module:
    """A model with N(0, 0.02) weights (RMSNorm weights 1): for speed benchmarks and tests."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        model = model_class(config)(config)
    check_memory(sum(p.numel() for p in model.parameters()) * dtype.itemsize, device, "a random-weight model")
    state = {}
    for name, p in model.state_dict().items():
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            state[name] = torch.ones(p.shape, dtype=dtype, device=device)
        else:  # drawn where it lives: an 8B model is too large to draw on the host quickly
            state[name] = torch.empty(p.shape, dtype=torch.float32 if device.type == "cpu" else dtype,
                                      device=device).normal_(0.0, 0.02, generator=gen).to(dtype)
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


def save_pretrained(
    model: torch.nn.Module,
    path: str | os.PathLike,
    dtype: str | torch.dtype | None = torch.bfloat16,
    max_shard_bytes: int = 15 * 2**20,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write config.json + safetensors (sharded with an index above ``max_shard_bytes``) atomically.

    The folder is written to a temporary sibling and renamed into place, so a crash leaves nothing
    half-written. ``extra_files`` maps file names to text (e.g. tokenizer files).
    """
    out = Path(path)
    dtype = parse_dtype(dtype) or model.dtype
    # clone views (fused projections share storage), which safetensors refuses to write; quantized weights and
    # their scales keep their own dtypes
    state = {k: v.detach().to("cpu") if is_quantized_tensor(k, v) else v.detach().to("cpu", dtype)
             for k, v in model.state_dict().items()}
    state = {k: v.contiguous() for k, v in state.items()}
    whole = {k: v.untyped_storage().nbytes() == v.numel() * v.element_size() for k, v in state.items()}
    state = {k: v if whole[k] else v.clone() for k, v in state.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config = model.config.to_dict()
        config["torch_dtype"] = str(dtype).removeprefix("torch.")
        if getattr(model, "quantization_config", None):
            config["quantization_config"] = model.quantization_config
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards):
                name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
