"""The public API: ``unmask.load(path_or_id)`` -> ``DiffusionLM``; ``.generate(prompts, policy=...)``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from unmask.decoding.credit import CreditConfig
from unmask.decoding.loop import DecodeResult, check_lengths, decode, resolve_compile
from unmask.decoding.policies import CommitPolicy, Policy, make_policy, policy_names
from unmask.decoding.scorers import Scorer
from unmask.models.llada import LLaDAModel
from unmask.models.loading import load_model, resolve_model_path
from unmask.models.tokenizer import Tokenizer

EMBEDDED_MODEL = "testbed"


def embedded_model_path() -> Path:
    """Folder of the small LLaDA model that ships inside the package (trained by ``unmask train``)."""
    return Path(str(resources.files("unmask") / "assets" / EMBEDDED_MODEL))


@dataclass
class GenerateOutput:
    """What ``DiffusionLM.generate`` returns: texts plus everything needed to analyse the decode."""

    texts: list[str]
    tokens: torch.Tensor  # [B, gen_length] generated ids (mask-free)
    lengths: torch.Tensor  # [B] tokens up to and including the first end-of-text/turn
    nfe: int
    nfe_per_row: torch.Tensor
    commit_step: torch.Tensor  # [B, gen_length] step at which each token was committed (-2: early-stop fill)
    commit_confidence: torch.Tensor
    elapsed_s: float
    prompt_ids: torch.Tensor  # [B, P] left-padded
    raw: DecodeResult

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

    def encode_prompts(self, prompts: str | list[str], chat: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Chat-templated (or raw) prompts -> left-padded ``input_ids`` and ``attention_mask``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise ValueError("prompts is empty: give at least one prompt")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompt {i} is empty or not a string: {prompt!r}")
        if chat:
            prompts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
        return self.tokenizer.batch_encode(prompts, device=self.device)

    def generate(
        self,
        prompts: str | list[str] | torch.Tensor,
        *,
        policy: str | Policy = "topk",
        gen_length: int = 128,
        block_length: int = 32,
        credit: bool | CreditConfig = False,
        cache: str = "none",
        temperature: float = 0.0,
        scorer: str = "confidence",
        cfg_scale: float = 0.0,
        logits_eos_inf: bool = False,
        confidence_eos_eot_inf: bool = False,
        early_stop: bool = True,
        chat: bool = True,
        attention_mask: torch.Tensor | None = None,
        seed: int | None = None,
        time_steps: bool = False,
        compile: bool | str | None = None,
        **knobs: float | int | None,
    ) -> GenerateOutput:
        """Decode a response for each prompt.

        policy: a registered policy by name with its option as a keyword (``knobs``): ``topk``
            (LLaDA baseline; ``steps`` in all, default ``gen_length``: one token per step),
            ``threshold`` (``threshold`` tau, default 0.9), ``factor`` (``factor`` f, default 1.0),
            ``frechet`` (``margin`` delta, default 0.25, or the budget ``factor``); or a policy object.
            An option of another policy is an error.
        credit: True (paper defaults) or a ``CreditConfig``: CreditDecoding fused with the policy.
        cache: ``none`` | ``prefix`` | ``dual`` (Fast-dLLM's approximate block KV cache).
        prompts: strings (chat template applied if ``chat``) or token ids [B, P] (with ``attention_mask``).
        compile: ``True``/``"fused"`` (CUDA graphs + ``torch.compile``), ``"exact"`` (CUDA graphs over the
            eager kernels, bitwise the eager decode) or ``False``; default: the ``load(compile=...)``
            setting, whose ``None`` means fused on CUDA and eager on the CPU.
        """
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
        if input_ids.shape[1] + gen_length > limit:
            raise ValueError(
                f"prompt length {input_ids.shape[1]} + gen_length {gen_length} exceeds the model's "
                f"max_sequence_length {limit}"
            )
        check_lengths(gen_length, block_length)
        if isinstance(policy, str):
            policy = make_policy(policy, gen_length=gen_length, block_length=block_length, **knobs)
        elif not isinstance(policy, CommitPolicy):
            raise ValueError(f"policy must be a name ({', '.join(policy_names())}) or a policy object, got {policy!r}")
        elif any(v is not None for v in knobs.values()):
            raise ValueError(f"give the options of a policy object to its constructor, not {', '.join(knobs)}")
        credit_config = CreditConfig() if credit is True else (credit or None)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        exclude = (self.tokenizer.eot_id,) if confidence_eos_eot_inf and self.tokenizer.eot_id is not None else ()
        result = decode(
            self.model, input_ids, policy, mask_id=self.mask_id, attention_mask=attention_mask,
            gen_length=gen_length, block_length=block_length,
            scorer=Scorer(scorer, temperature, generator, exclude), credit=credit_config, cache=cache,
            cfg_scale=cfg_scale, logits_eos_inf=logits_eos_inf, eos_id=self.tokenizer.eos_id,
            stop_ids=self.tokenizer.stop_ids, early_stop=early_stop, time_steps=time_steps,
            compile=self.compile if compile is None else compile,
        )
        texts = [
            self.tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True).strip()
            for row, n in zip(result.tokens, result.lengths, strict=True)
        ]
        return GenerateOutput(
            texts=texts, tokens=result.tokens, lengths=result.lengths, nfe=result.nfe,
            nfe_per_row=result.nfe_per_row, commit_step=result.commit_step,
            commit_confidence=result.commit_confidence, elapsed_s=result.elapsed_s, prompt_ids=input_ids,
            raw=result,
        )


def load(
    path_or_id: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    compile: bool | str | None = None,
) -> DiffusionLM:
    """Load a LLaDA checkpoint (local folder or hub id); ``None`` loads the embedded testbed model.

    The projections are fused for inference (q/k/v and gate/up one matmul each; the checkpoint layout
    is unchanged). ``compile``: default of ``generate(compile=...)``: ``None`` = CUDA graphs and
    ``torch.compile`` on a CUDA device, eager on the CPU; ``"exact"`` = CUDA graphs over the eager
    kernels; ``False`` = eager.
    """
    if path_or_id is None:
        path_or_id = embedded_model_path()
        if not (Path(path_or_id) / "config.json").is_file():
            raise FileNotFoundError(f"the embedded model is missing from {path_or_id}; reinstall unmask")
    folder = resolve_model_path(path_or_id)
    model = load_model(folder, dtype=dtype, device=device).fuse_projections()
    resolve_compile(compile, model.device)  # a bad mode fails here, not at the first generate
    tokenizer = Tokenizer.from_pretrained(folder, mask_token_id=model.config.mask_token_id)
    return DiffusionLM(model, tokenizer, folder, compile=compile)
