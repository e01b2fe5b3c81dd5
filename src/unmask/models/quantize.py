"""Weight-only quantization of the linear layers: fewer bytes per weight read, the batch-1 step's bound.

Per output row n of a weight W [N, K] (gpt-fast's recipe; symmetric, no zero point):

- ``int8``: s_n = max_k |W_nk| / 127, Q = round(W / s) in int8;  y = (x @ Q^T) * s  (the scale after the matmul)
- ``fp8``:  s_n = max_k |W_nk| / 448, Q = (W / s) in float8_e4m3fn (round to nearest);  y = (x @ Q^T) * s
- ``int4``: per row and group of ``group_size`` columns g (or the largest even divisor of K below it),
  s_ng = max |W_ng| / 7, Q = clamp(round(W / s), -8, 7), two per byte (low nibble: the even column, high:
  the odd, each + 8); y = x @ (Q * s)^T

- ``fp8-w8a8``: the weights as ``fp8``, and each activation row quantized on the fly, s_m = max_k |x_mk| / 448,
  x_q = (x / s) in float8; y = ``torch._scaled_mm``(x_q, Q^T) with both scales (fp8 tensor cores: for the
  compute-bound batched windows and refreshes).

Scales are float32. The matmul runs in the activations' dtype on the weights converted on the fly
(``QuantizedWeight.linear``); under ``torch.compile`` the conversion fuses into the kernel that reads the
weights, so a batch-1 step reads 1 (int8, fp8) or 1/2 (int4) byte per weight instead of 2. Embeddings, norms,
routers and the MoE experts (stacked for the grouped matmul) stay in the model's dtype; the LM head is
quantized only when asked (``head=True``).

A quantized model saves as a checkpoint of the same names: ``<linear>.weight`` holds Q (int8, uint8 for
int4, float8_e4m3fn) and ``<linear>.weight_scale`` the scales beside it; config.json's
``quantization_config`` (``{"quant_method": "unmask", "mode", "group_size", "modules"}``) lets ``load_model``
rebuild the layout without quantizing again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("int8", "int4", "fp8", "fp8-w8a8")
QUANT_METHOD = "unmask"
DEFAULT_GROUP_SIZE = 128
FP8 = torch.float8_e4m3fn
STORAGE = {"int8": torch.int8, "int4": torch.uint8, "fp8": FP8, "fp8-w8a8": FP8}
QMAX = {"int8": 127.0, "int4": 7.0, "fp8": 448.0, "fp8-w8a8": 448.0}


def check_mode(mode: str, device: torch.device | None = None) -> None:
    """A ``ValueError`` naming the mode and what is allowed (fp8 on CUDA needs compute capability 8.9+)."""
    if mode not in MODES:
        raise ValueError(f"quantize must be one of {', '.join(MODES)} (or None: the checkpoint's dtype), got {mode!r}")
    if mode.startswith("fp8") and device is not None and device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            raise ValueError(f"quantize={mode!r} needs a GPU with compute capability >= 8.9 (Ada, Hopper), this one "
                             f"is {major}.{minor}; use int8 or int4")


@dataclass
class QuantizedWeight:
    """A quantized [N, K] weight: ``data`` (int8 [N, K], uint8 [N, K / 2] for int4, float8 [N, K]) and float32
    ``scale`` ([N, 1] per row; int4: [N, K / group_size])."""

    mode: str
    data: torch.Tensor
    scale: torch.Tensor
    group_size: int = DEFAULT_GROUP_SIZE

    @property
    def shape(self) -> torch.Size:
        n, k = self.data.shape
        return torch.Size((n, 2 * k if self.mode == "int4" else k))

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """W ~ Q * s as [N, K] in ``dtype``."""
        if self.mode != "int4":
            return (self.data.to(torch.float32) * self.scale).to(dtype)
        q = unpack_int4(self.data).to(torch.float32)  # [N, K]
        n, k = q.shape
        return (q.view(n, k // self.group_size, self.group_size) * self.scale[..., None]).view(n, k).to(dtype)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x @ W^T (+ bias) in x's dtype."""
        if self.mode == "int4":
            y = F.linear(x, self.dequantize(x.dtype))
        elif self.mode == "fp8-w8a8":
            return scaled_mm_linear(x, self.data, self.scale, bias)
        else:  # per-row scales commute with the matmul: scale its output
            y = F.linear(x, self.data.to(x.dtype)) * self.scale.view(-1).to(x.dtype)
        return y if bias is None else y + bias


def scaled_mm_linear(x: torch.Tensor, data: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ (Q * s)^T with x quantized per row to float8 (s_x = max |x_m| / 448) and one fp8 matmul that applies
    both scales (``torch._scaled_mm``, float32 accumulation), in x's dtype (float32 for a float64 x). Off CUDA the
    same product in float32 ((x_q @ Q^T) s_x s^T: every fp8 value is exact in float32), since the CPU
    ``_scaled_mm`` of some torch releases (2.11) takes per-tensor scales only."""
    shape, k = x.shape, x.shape[-1]
    x_q, s_x = quantize_rows_fp8(x.reshape(-1, k))
    out = x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.float32
    if x.is_cuda:
        y = torch._scaled_mm(x_q, data.t(), scale_a=s_x, scale_b=scale.view(1, -1), out_dtype=out)
    else:
        y = ((x_q.float() @ data.float().t()) * s_x * scale.view(1, -1).float()).to(out)
    y = y.to(x.dtype).reshape(*shape[:-1], data.shape[0])
    return y if bias is None else y + bias


def quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of x [M, K] to float8: s_m = max_k |x_mk| / 448 (float32, at least the smallest normal), x_q = x / s
    (round to nearest); returns (x_q [M, K], s [M, 1])."""
    rows = x.float()
    s_x = (rows.abs().amax(dim=-1, keepdim=True) / QMAX["fp8"]).clamp(min=torch.finfo(torch.float32).tiny)
    return (rows / s_x).to(FP8), s_x


def linear(x: torch.Tensor, weight: torch.Tensor | QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, or a quantized weight's own matmul."""
    if isinstance(weight, QuantizedWeight):
        return weight.linear(x, bias)
    return F.linear(x, weight, bias)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int values in [-8, 7], [N, K] (K even) -> uint8 [N, K / 2]: low nibble the even column, high the odd."""
    u = (q + 8).to(torch.uint8)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K / 2] -> int8 [N, K] in [-8, 7]."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).flatten(-2)


def int4_group(columns: int, group_size: int) -> int:
    """The int4 group of a weight with ``columns`` columns: ``group_size`` if it divides them, else the largest
    even divisor of the columns below it (the 8B shapes' widths are multiples of 128)."""
    if columns % 2:
        raise ValueError(f"int4 packs two columns per byte: the weight's {columns} columns must be even")
    return max(d for d in range(2, min(group_size, columns) + 1, 2) if columns % d == 0)


def quantize_weight(weight: torch.Tensor, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> QuantizedWeight:
    """Quantize a [N, K] weight (module docstring); rows of zeros get scale 1."""
    check_mode(mode)
    w = weight.detach().to(torch.float32)
    n, k = w.shape
    if mode == "int4":
        group_size = int4_group(k, group_size)
        groups = w.view(n, k // group_size, group_size)
        scale = groups.abs().amax(dim=-1) / QMAX[mode]
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = (groups / scale[..., None]).round().clamp(-8, 7).view(n, k)
        return QuantizedWeight(mode, pack_int4(q), scale, group_size)
    scale = w.abs().amax(dim=-1, keepdim=True) / QMAX[mode]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    scaled = w / scale
    data = scaled.round().clamp(-127, 127).to(torch.int8) if mode == "int8" else scaled.to(FP8)  # fp8, fp8-w8a8
    return QuantizedWeight(mode, data, scale, group_size)


class QuantizedLinear(nn.Module):
    """A bias-free ``nn.Linear`` with a quantized weight: ``module.weight`` is the ``QuantizedWeight`` (what the
    kernels read); the state dict holds ``weight`` (Q) and ``weight_scale``, the checkpoint's names."""

    def __init__(self, in_features: int, out_features: int, mode: str, group_size: int = DEFAULT_GROUP_SIZE,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        check_mode(mode)
        if mode == "int4":
            group_size = int4_group(in_features, group_size)
        self.in_features, self.out_features, self.mode, self.group_size = in_features, out_features, mode, group_size
        width = in_features // 2 if mode == "int4" else in_features
        scales = in_features // group_size if mode == "int4" else 1
        self.register_buffer("qweight", torch.empty((out_features, width), dtype=STORAGE[mode], device=device))
        self.register_buffer("qscale", torch.empty((out_features, scales), dtype=torch.float32, device=device))
        self.register_state_dict_post_hook(_rename_on_save)
        self.register_load_state_dict_pre_hook(_rename_on_load)

    @classmethod
    def from_linear(cls, module: nn.Linear, mode: str, group_size: int = DEFAULT_GROUP_SIZE) -> QuantizedLinear:
        if module.bias is not None:
            raise ValueError("only bias-free linear layers are quantized")
        quantized = quantize_weight(module.weight, mode, group_size)
        out = cls(module.in_features, module.out_features, mode, group_size, device="meta")
        out.qweight, out.qscale = quantized.data, quantized.scale
        return out

    @property
    def weight(self) -> QuantizedWeight:
        return QuantizedWeight(self.mode, self.qweight, self.qscale, self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.linear(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}"


def _rename_on_save(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    state[prefix + "weight"] = state.pop(prefix + "qweight")
    state[prefix + "weight_scale"] = state.pop(prefix + "qscale")


def _rename_on_load(module: nn.Module, state: dict, prefix: str, *args) -> None:
    for old, new in (("weight", "qweight"), ("weight_scale", "qscale")):
        if prefix + old in state:
            state[prefix + new] = state.pop(prefix + old)


def fuse_quantized(modules: list[QuantizedLinear]) -> QuantizedWeight:
    """The modules' quantized weights concatenated along the rows (per-row scales: the same as quantizing the
    fused matrix); each module's buffers become views into the result."""
    first = modules[0]
    data = torch.cat([m.qweight for m in modules])
    scale = torch.cat([m.qscale for m in modules])
    row = 0
    for m in modules:
        rows = m.qweight.shape[0]
        m.qweight, m.qscale = data[row:row + rows], scale[row:row + rows]
        row += rows
    return QuantizedWeight(first.mode, data, scale, first.group_size)


def quantizable(model: nn.Module, head: bool = False) -> list[str]:
    """Names of the linear layers to quantize: every bias-free ``nn.Linear`` but the MoE routers and experts
    (and the LM head unless ``head``)."""
    head_names = {"lm_head", "model.transformer.ff_out"}
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module.bias is not None:
            continue
        parts = name.split(".")
        if "experts" in parts or parts[-1] == "gate" or (name in head_names and not head):
            continue
        names.append(name)
    return names


def replace_modules(model: nn.Module, names: list[str], make) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(getattr(parent, child)))


def quantize_model(model: nn.Module, mode: str, group_size: int = DEFAULT_GROUP_SIZE, head: bool = False
                   ) -> nn.Module:
    """Quantize the linear layers of an unfused model in place (``quantizable``); records
    ``model.quantization_config`` for saving. Fuse the projections after."""
    check_mode(mode, model.device)
    if any(getattr(layer, "fused", False) for layer in model.layers()):
        raise ValueError("quantize the model before fusing its projections (load(..., quantize=...) does)")
    names = quantizable(model, head)
    replace_modules(model, names, lambda m: QuantizedLinear.from_linear(m, mode, group_size))
    model.quantization_config = {"quant_method": QUANT_METHOD, "mode": mode, "group_size": group_size,
                                 "modules": names}
    return model


def prepare_quantized(model: nn.Module, config: dict) -> None:
    """Before loading a quantized checkpoint into a (meta) model: its listed linears become ``QuantizedLinear``."""
    if not isinstance(config, dict) or config.get("quant_method") != QUANT_METHOD:
        raise ValueError(f"quantization_config {config!r} is not unmask's (quant_method {QUANT_METHOD!r})")
    mode, group_size, names = config.get("mode"), config.get("group_size", DEFAULT_GROUP_SIZE), config.get("modules")
    check_mode(mode)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"quantization_config modules must be a list of module names, got {names!r}")
    try:
        replace_modules(model, names, lambda m: QuantizedLinear(m.in_features, m.out_features, mode, group_size,
                                                                device="meta"))
    except AttributeError as err:
        raise ValueError(f"quantization_config names a module the model does not have: {err}") from None
    model.quantization_config = dict(config)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as stored: every storage behind its parameters and buffers once (fused
    matrices and their views counted once; quantized weights at their own size, scales included)."""
    storages = {}
    for t in [*model.parameters(), *model.buffers()]:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def parameter_count(model: nn.Module) -> int:
    """Parameters, quantized weights counted as the weights they stand for."""
    count = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            count += module.in_features * module.out_features
    return count


def error_ratio(weight: torch.Tensor, quantized: QuantizedWeight) -> float:
    """||W - deq(Q)|| / ||W|| (relative Frobenius error)."""
    w = weight.detach().to(torch.float32)
    return float((w - quantized.dequantize(torch.float32)).norm() / max(float(w.norm()), math.ulp(0.0)))
