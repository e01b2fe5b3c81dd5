"""The public API: ``unmask.load(path_or_id)`` -> ``DiffusionLM``; ``.generate(prompts, policy=...)``."""

from __future__ import annotations

import os
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from unmask.decoding.config import DecodeConfig
from unmask.decoding.loop import DecodeResult, decode, resolve_compile, stop_lengths
from unmask.models.llada import LLaDAModel
from unmask.models.loading import (
    INDEX_NAME,
    load_model,
    parse_dtype,
    random_model,
    resolve_device,
    resolve_model_path,
    save_pretrained,
)
from unmask.models.quantize import quantize_model
from unmask.models.tokenizer import Tokenizer

EMBEDDED_MODEL = "testbed"  # the default model of every command
# Models that ship inside the package (``src/unmask/assets/<name>``), loadable by name: ``unmask.load(name)``,
# ``--model name``, ``unmask train --init name``. "embedded" is another name of the default.
EMBEDDED_MODELS: dict[str, str] = {
    "testbed": "the default: 14M LLaDA trained on the synthetic math/code/long tasks (docs/benchmarks/testbed.md)",
    "testbed-varied": "testbed fine-tuned on varied wordings, with LLaDA-8B's confidence profile "
    "(issue 14, docs/benchmarks/testbed_varied.md)",
}
EMBEDDED_ALIASES = {"embedded": EMBEDDED_MODEL}
RANDOM_PREFIX = "random:"  # unmask.load("random:llada-8b"): a benchmark model, see random_weights_lm


def _assets_dir() -> Path:
    return Path(str(resources.files("unmask") / "assets"))


def embedded_model_path(name: str = EMBEDDED_MODEL) -> Path:
    """Folder of a model that ships inside the package (trained by ``unmask train``); default: the testbed.

    The folder of a known name that this build does not ship may be missing or empty: see
    ``embedded_model_folder`` for the checked path."""
    name = EMBEDDED_ALIASES.get(name, name)
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r} (known: {', '.join(EMBEDDED_MODELS)})")
    return _assets_dir() / name


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a config.json and safetensors weights."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def shipped_models() -> list[str]:
    """The names of the embedded models whose weights this build holds."""
    return [name for name in EMBEDDED_MODELS if is_model_folder(embedded_model_path(name))]


def embedded_model_folder(name: str) -> Path:
    """The folder of embedded model ``name``, checked: a ``FileNotFoundError`` names the shipped models when
    this build lacks its weights."""
    folder = embedded_model_path(name)
    if not is_model_folder(folder):
        canonical = EMBEDDED_ALIASES.get(name, name)
        raise FileNotFoundError(
            f"{canonical} is not shipped in this build (no config.json and safetensors weights in {folder}); "
            f"shipped: {', '.join(shipped_models()) or 'none'} (known names: {', '.join(EMBEDDED_MODELS)}); "
            "reinstall unmask or pass a checkpoint folder"
        )
    return folder


def named_model_folder(path_or_id: str | os.PathLike | None) -> Path | None:
    """``None`` or an embedded model's name (see ``EMBEDDED_MODELS``, ``EMBEDDED_ALIASES``) -> its checked
    folder; anything else (a local folder, a hub id) -> ``None``. A local folder of the same name wins."""
    if path_or_id is None:
        return embedded_model_folder(EMBEDDED_MODEL)
    if not isinstance(path_or_id, str) or path_or_id not in {*EMBEDDED_MODELS, *EMBEDDED_ALIASES}:
        return None
    if Path(path_or_id).is_dir():
        return None
    return embedded_model_folder(path_or_id)


@dataclass
class GenerateOutput(DecodeResult):
    """What ``DiffusionLM.generate`` returns: the decode's ``DecodeResult`` with the texts, the prompts'
    token ids and the settings used."""

    texts: list[str] = field(default_factory=list)
    prompt_ids: torch.Tensor | None = None  # [B, P] left-padded
    config: DecodeConfig | None = None

    @property
    def tokens_per_nfe(self) -> float:
        """Generated tokens (up to the first stop token) per model forward, averaged over rows."""
        return float((self.lengths.float() / self.nfe_per_row.clamp(min=1).float()).mean())


class DiffusionLM:
    """A masked-diffusion language model with its tokenizer and the unmask decoder."""

    def __init__(
        self, model: LLaDAModel, tokenizer: Tokenizer, path: Path | None = None, compile: bool | str | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        self.compile = compile  # default of generate(compile=...): None = CUDA graphs + torch.compile on CUDA only

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def mask_id(self) -> int:
        return self.model.config.mask_token_id

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the model (config.json + safetensors in its dtype; a quantized model as quantized: Q and its
        scales under the checkpoint's names, ``quantization_config`` in config.json) and the tokenizer files of
        the folder it was loaded from, atomically. ``unmask.load(path)`` loads it back as it was."""
        source = self.path or embedded_model_path()
        skip = {"config.json", INDEX_NAME}
        files = {f.name: f.read_text() for f in sorted(Path(source).iterdir())
                 if f.is_file() and f.suffix in (".json", ".txt", ".jinja") and f.name not in skip}
        return save_pretrained(self.model, path, dtype=self.model.dtype, extra_files=files)

    def encode_prompts(self, prompts: str | list[str], chat: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Chat-templated (or raw) prompts -> left-padded ``input_ids`` and ``attention_mask``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise ValueError(f"prompts must be a string, a list of strings or a token tensor, got "
                             f"{type(prompts).__name__} {reprlib.repr(prompts)}")
        if not prompts:
            raise ValueError("prompts is empty: give at least one prompt")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompt {i} is empty or not a string: {reprlib.repr(prompt)}")
        if chat:
            prompts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
        return self.tokenizer.batch_encode(prompts, device=self.device)

    def answer_length(self, tokens: torch.Tensor) -> int:
        """An answer's tokens [G] up to and including the first stop token (all of them if none)."""
        stops = torch.tensor(tuple(self.tokenizer.stop_ids) or (-1,), device=tokens.device)
        return int(stop_lengths(tokens[None], stops)[0])

    def answer_text(self, tokens: torch.Tensor, length: int | None = None) -> str:
        """The text of an answer's first ``length`` tokens (default: ``answer_length``)."""
        length = self.answer_length(tokens) if length is None else length
        return self.tokenizer.decode(tokens[:length].tolist(), skip_special_tokens=True).strip()

    def generate(
        self,
        prompts: str | list[str] | torch.Tensor,
        config: DecodeConfig | None = None,
        *,
        chat: bool = True,
        attention_mask: torch.Tensor | None = None,
        time_steps: bool = False,
        on_block: Callable[[int, int], None] | None = None,
        slots: int | None = None,
        on_row: Callable[[int, Any], None] | None = None,
        on_step: Callable[[Any], None] | None = None,
        **settings: Any,
    ) -> GenerateOutput:
        """Decode a response for each prompt.

        prompts: strings (chat template applied if ``chat``) or token ids [B, P] (with ``attention_mask``).
        config / settings: a ``DecodeConfig`` and/or its fields as keywords (keywords win), e.g.
            ``policy="threshold", threshold=0.9, cache="dual", credit=True, gen_length=256``:
            ``policy`` is a registered name with its option as a keyword (``topk``: ``steps`` in all,
            default ``gen_length``; ``threshold``: ``threshold`` tau, default 0.9; ``factor``: ``factor`` f,
            default 1.0; ``frechet``: ``margin`` delta, default 0.25, or the budget ``factor``) or a policy
            object; ``credit``: True or a ``CreditConfig``; ``cache``: none | prefix | dual; ``compile``:
            ``True``/``"fused"`` (CUDA graphs + ``torch.compile``), ``"exact"`` (CUDA graphs over the eager
            kernels) or ``False``, default the ``load(compile=...)`` setting. Every value is checked first.
        on_block: called as ``on_block(blocks_done, blocks)`` as rows finish blocks (a progress display).
        slots: rows decoding at once (default: all of them). With fewer slots than prompts the prompts go
            through the engine in order with continuous batching: a row leaves as soon as it is finished and the
            next prompt takes its slot; every row's answer is the one it gets decoded alone.
        on_row: called as ``on_row(i, RowResult)`` when prompt ``i`` is finished (its tokens, commit steps and
            forwards), before the others are done.
        on_step: called after every step of every row as ``on_step(StepCommits)``: the row (``key``: the
            prompt's index), its forwards so far, its block, and the answer positions committed by this step
            with their tokens and confidences (the canvas filling in; one device read-back per step).
        """
        config = DecodeConfig.create(config, **settings)
        if not isinstance(chat, bool):
            raise ValueError(f"chat must be True or False, got {chat!r}")
        if on_block is not None and not callable(on_block):
            raise ValueError(f"on_block must be a function (blocks_done, blocks) or None, got {on_block!r}")
        if on_row is not None and not callable(on_row):
            raise ValueError(f"on_row must be a function (row, result) or None, got {on_row!r}")
        if on_step is not None and not callable(on_step):
            raise ValueError(f"on_step must be a function (StepCommits) or None, got {on_step!r}")
        if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 1):
            raise ValueError(f"slots must be a positive integer (rows decoding at once) or None, got {slots!r}")
        if attention_mask is not None and not isinstance(prompts, torch.Tensor):
            raise ValueError("attention_mask goes with token prompts only (text prompts are padded here)")
        if isinstance(prompts, torch.Tensor):
            if prompts.dim() != 2 or prompts.numel() == 0:
                raise ValueError(
                    f"token prompts must be a non-empty [batch, length] tensor, got {tuple(prompts.shape)}"
                )
            input_ids = prompts.to(self.device)
            attention_mask = None if attention_mask is None else attention_mask.to(self.device)
        else:
            input_ids, attention_mask = self.encode_prompts(prompts, chat=chat)
        limit = self.model.config.max_sequence_length
        if input_ids.shape[1] + config.gen_length > limit:
            raise ValueError(
                f"prompt length {input_ids.shape[1]} + gen_length {config.gen_length} exceeds the model's "
                f"max_sequence_length {limit}"
            )
        generator = None
        if config.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(config.seed)
        result = decode(
            self.model, input_ids, config.build_policy(), mask_id=self.mask_id, attention_mask=attention_mask,
            gen_length=config.gen_length, block_length=config.block_length,
            scorer=config.build_scorer(self.tokenizer.eot_id, generator), credit=config.credit_config,
            cache=config.cache, cfg_scale=config.cfg_scale, logits_eos_inf=config.logits_eos_inf,
            eos_id=self.tokenizer.eos_id, stop_ids=self.tokenizer.stop_ids, early_stop=config.early_stop,
            time_steps=time_steps, compile=self.compile if config.compile is None else config.compile,
            on_block=on_block, slots=slots, on_row=on_row, on_step=on_step,
        )
        texts = [self.answer_text(row, int(n)) for row, n in zip(result.tokens, result.lengths, strict=True)]
        return GenerateOutput(**vars(result), texts=texts, prompt_ids=input_ids, config=config)


def load(
    path_or_id: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    compile: bool | str | None = None,
    quantize: str | None = None,
    quantize_head: bool = False,
) -> DiffusionLM:
    """Load a checkpoint (local folder or hub id; its ``model_type`` picks the architecture: LLaDA, Dream, ...);
    ``None`` loads the embedded testbed model, and the name of an embedded model (``EMBEDDED_MODELS``:
    ``"testbed"``, ``"testbed-varied"``; ``"embedded"`` = ``"testbed"``) loads that one.

    The projections are fused for inference (q/k/v and gate/up one matmul each; the checkpoint layout
    is unchanged). ``compile``: default of ``generate(compile=...)``: ``None`` = CUDA graphs and
    ``torch.compile`` on a CUDA device, eager on the CPU; ``"exact"`` = CUDA graphs over the eager
    kernels; ``False`` = eager. ``"random:SHAPE"`` (benchmarks only): ``random_weights_lm``.
    ``quantize``: ``"int8"``, ``"int4"`` or ``"fp8"`` weight-only quantization of the linear layers
    (``models/quantize.py``; the LM head too with ``quantize_head``); a checkpoint saved quantized
    (``DiffusionLM.save_pretrained``) loads quantized as it is.
    """
    if isinstance(path_or_id, str) and path_or_id.startswith(RANDOM_PREFIX):
        return random_weights_lm(path_or_id.removeprefix(RANDOM_PREFIX), device=device, dtype=dtype, compile=compile,
                                 quantize=quantize)
    if not isinstance(quantize_head, bool):
        raise ValueError(f"quantize_head must be True or False, got {quantize_head!r}")
    folder = named_model_folder(path_or_id) or resolve_model_path(path_or_id)
    model = load_model(folder, dtype=dtype, device=device, quantize=quantize,
                       quantize_head=quantize_head).fuse_projections()
    resolve_compile(compile, model.device)  # a bad mode fails here, not at the first generate
    tokenizer = Tokenizer.from_pretrained(folder, mask_token_id=model.config.mask_token_id)
    return DiffusionLM(model, tokenizer, folder, compile=compile)


def random_weights_lm(
    shape: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    compile: bool | str | None = None,
    quantize: str | None = None,
) -> DiffusionLM:
    """Benchmarks only: a model of a named shape (``unmask bench --random-weights``: llada-8b, dream-7b, ...)
    with N(0, 0.02) weights drawn from seed 0 (the same model in every process) and the embedded model's
    tokenizer. Its texts are noise and its accuracy means nothing; its speed is the real shape's."""
    from unmask.eval.speed import SHAPES

    if shape not in SHAPES:
        raise ValueError(f"unknown random-weight shape {shape!r} (allowed: {', '.join(SHAPES)})")
    dev = resolve_device(device)
    model = random_model(SHAPES[shape], dtype=parse_dtype(dtype) or (torch.bfloat16 if dev.type == "cuda"
                                                                      else torch.float32), device=dev)
    if quantize is not None:
        quantize_model(model, quantize)
    model.fuse_projections()
    resolve_compile(compile, model.device)
    tokenizer = Tokenizer.from_pretrained(embedded_model_path(), mask_token_id=model.config.mask_token_id)
    return DiffusionLM(model, tokenizer, compile=compile)
