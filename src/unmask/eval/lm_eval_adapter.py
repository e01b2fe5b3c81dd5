"""lm-evaluation-harness adapter: ``--model unmask`` for generation tasks.

lm_eval 0.4.x finds models only in its own registry (it loads no entry points), so this module
registers ``unmask`` when it is imported. Three ways to use it:

- command line, through this module (registers, then runs lm_eval's own CLI with the same arguments)::

      python -m unmask.eval.lm_eval_adapter --model unmask \\
          --model_args pretrained=PATH,policy=threshold,threshold=0.9,cache=dual,gen_length=256 \\
          --tasks gsm8k --batch_size 8

- Python: ``import unmask.eval.lm_eval_adapter`` then ``lm_eval.simple_evaluate(model="unmask", ...)``,
  or pass an instance: ``simple_evaluate(model=UnmaskLM(pretrained=PATH, policy="frechet"), ...)``.

model_args: ``pretrained`` (folder or hub id; default the embedded testbed model), ``spec`` (a decoding
spec such as ``threshold:0.9+credit@dual``) or the separate ``policy``, ``threshold``, ``factor``,
``margin``, ``steps``, ``credit``, ``cache``; ``gen_length`` (default: the task's ``max_gen_toks``
rounded up to a multiple of ``block_length``), ``block_length`` (32), ``early_stop`` (true),
``chat`` (true: wrap each context as a user message of the chat template; ignored when lm_eval's
``--apply_chat_template`` already did), ``device``, ``dtype``, ``batch_size``.

Only ``generate_until`` is supported: the ``until`` strings cut the decoded text. Log-likelihoods of
a masked diffusion model are not a single forward: they need a Monte-Carlo estimate of the ELBO over
masking ratios (LLaDA, Nie et al. 2025, Appendix B.6), which unmask does not provide, so
``loglikelihood`` and ``loglikelihood_rolling`` raise ``NotImplementedError``.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import model_registry, register_model

from unmask.decoding.config import DEFAULT_OPTIONS, DEFAULT_POLICY, policy_of_options
from unmask.decoding.policies import REGISTRY, get_policy_class, knob_names
from unmask.eval.spec import DecodeSpec, parse_spec

LOGLIKELIHOOD_MESSAGE = (
    "unmask's lm_eval adapter supports generation tasks (output_type generate_until) only: a masked "
    "diffusion LM has no left-to-right log-likelihood, and estimating it needs a Monte-Carlo estimator "
    "of the ELBO over masking ratios (LLaDA, Appendix B.6), which unmask does not provide. "
    "Run generation tasks (e.g. gsm8k, humaneval, mbpp) instead."
)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"model arg {name} must be true or false, got {value!r}")


def build_spec(spec: str | None, policy: str | None, knobs: dict[str, Any], credit: Any,
               cache: str | None) -> DecodeSpec:
    """One ``DecodeSpec`` from either ``spec=`` or the separate model args (not both).

    ``knobs``: the policy options given as model args (``threshold=0.9``; names from the policy registry).
    """
    knobs = {k: v for k, v in knobs.items() if v is not None}
    if spec is not None:
        given = [k for k, v in {"policy": policy, "cache": cache, **knobs}.items() if v is not None]
        if given or credit not in (None, False):
            raise ValueError(f"give either spec= or the separate args ({', '.join(given) or 'credit'}), not both")
        return parse_spec(str(spec))
    if policy is None:  # as DecodeConfig: the policy the options belong to, the default's option where not given
        policy = policy_of_options(knobs)
        knobs = {**DEFAULT_OPTIONS, **knobs} if policy == DEFAULT_POLICY else knobs
    if policy not in REGISTRY:
        return parse_spec(policy)  # raises with the allowed forms
    own = get_policy_class(policy).knob
    others = sorted(k for k in knobs if k != own.name)
    if others:
        raise ValueError(f"model arg(s) {', '.join(others)} do not apply to policy {policy!r} (its arg: {own.name})")
    text = policy if own.name not in knobs else f"{policy}:{knobs[own.name]}"
    if credit not in (None, False):
        text += "+credit-adaptive" if str(credit).lower() == "adaptive" else (
            "+credit" if _as_bool("credit", credit) else "")
    if cache:
        text += f"@{cache}"
    return parse_spec(text)


class UnmaskLM(LM):
    """An unmask ``DiffusionLM`` behind lm_eval's ``LM`` interface (generation only)."""

    def __init__(
        self,
        pretrained: str | None = None,
        spec: str | None = None,
        policy: str | None = None,
        credit: Any = None,
        cache: str | None = None,
        gen_length: int | None = None,
        block_length: int = 32,
        early_stop: Any = True,
        chat: Any = True,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str | None = 1,
        max_batch_size: int | None = None,
        lm: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in knob_names()}  # policy options, e.g. threshold=0.9
        unknown = sorted(k for k in kwargs if k not in ("trust_remote_code", "revision", "parallelize"))
        if unknown:
            raise ValueError(f"unknown unmask model arg(s): {', '.join(unknown)}")
        self.spec = build_spec(spec, policy, knobs, credit, cache)
        self.gen_length = None if gen_length is None else int(gen_length)
        self.block_length = int(block_length)
        if self.block_length <= 0:
            raise ValueError(f"block_length must be > 0, got {block_length}")
        self.early_stop = _as_bool("early_stop", early_stop)
        self.chat = _as_bool("chat", chat)
        if batch_size in (None, "auto") or str(batch_size).startswith("auto"):
            batch_size = max_batch_size or 8
        self.batch_size = int(batch_size)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if lm is None:
            import unmask

            lm = unmask.load(pretrained, device=_available(device), dtype=dtype)
        self.lm = lm
        self.pretrained = str(pretrained or "embedded")
        self._templated = False  # lm_eval applied our chat template to the contexts

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> UnmaskLM:
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> UnmaskLM:
        """lm_eval passes batch_size/max_batch_size/device besides model_args (its CLI always sets device,
        default cuda:0): model_args win over those."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    # ----------------------------------------------------------------- lm_eval interface

    @property
    def tokenizer_name(self) -> str:
        return f"unmask:{self.pretrained}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.lm.tokenizer.chat_template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        self._templated = True
        return self.lm.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        raise NotImplementedError(LOGLIKELIHOOD_MESSAGE)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(LOGLIKELIHOOD_MESSAGE)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Decode each context with the spec; cut the text at the first ``until`` string."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        settings: dict[tuple, tuple[list[str], int, float]] = {}
        for i, request in enumerate(requests):
            _, gen_kwargs = request.args
            until, gen_length, temperature = self._gen_settings(dict(gen_kwargs or {}))
            key = (tuple(until), gen_length, temperature)
            groups[key].append(i)
            settings[key] = (until, gen_length, temperature)
        bar = None
        if not disable_tqdm:
            from tqdm import tqdm

            bar = tqdm(total=len(requests), desc="unmask generate_until")
        for key, indices in groups.items():  # each group through batch_size slots (continuous batching)
            until, gen_length, temperature = settings[key]

            def finished(row: int, result: Any, indices: list[int] = indices, until: list[str] = until) -> None:
                i = indices[row]
                text = cut_at_stops(self.lm.answer_text(result.tokens), until)
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
                if bar is not None:
                    bar.update(1)

            self._generate([requests[i].args[0] for i in indices], gen_length, temperature, on_row=finished)
        if bar is not None:
            bar.close()
        return [r if r is not None else "" for r in results]

    # ----------------------------------------------------------------- helpers

    def _gen_settings(self, gen_kwargs: dict[str, Any]) -> tuple[list[str], int, float]:
        until = gen_kwargs.pop("until", None) or []
        if isinstance(until, str):
            until = [until]
        max_gen = gen_kwargs.pop("max_gen_toks", None)
        if self.gen_length is not None:
            gen_length = self.gen_length
        else:
            want = int(max_gen) if max_gen else 256
            gen_length = self.block_length * max(1, math.ceil(want / self.block_length))
        do_sample = bool(gen_kwargs.pop("do_sample", False))
        temperature = float(gen_kwargs.pop("temperature", 0.0) or 0.0)
        if not do_sample:
            temperature = 0.0
        return list(until), gen_length, temperature

    def _generate(self, contexts: list[str], gen_length: int, temperature: float,
                  on_row: Any = None) -> list[str]:
        """``contexts`` through ``batch_size`` slots of the decode engine; ``on_row(i, result)`` as each finishes."""
        chat = self.chat and not self._templated
        if not chat:  # raw (or already templated) contexts may legitimately be empty
            contexts = [c if c.strip() else " " for c in contexts]
        out = self.lm.generate(contexts, gen_length=gen_length, block_length=self.block_length,
                               early_stop=self.early_stop, temperature=temperature, chat=chat,
                               slots=self.batch_size, on_row=on_row, **self.spec.generate_kwargs())
        return list(out.texts)


def _available(device: str | None) -> str | None:
    """lm_eval's CLI asks for cuda:0 by default: fall back to the CPU (with a warning) when there is no GPU."""
    if device and str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            import warnings

            warnings.warn(f"device {device!r} requested but CUDA is not available; using the CPU", stacklevel=3)
            return "cpu"
    return device


def cut_at_stops(text: str, until: list[str]) -> str:
    """``text`` up to the earliest occurrence of any non-empty stop string."""
    cut = len(text)
    for stop in until:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def register() -> None:
    """Register ``UnmaskLM`` as lm_eval model ``unmask`` (once; done on import of this module)."""
    if "unmask" not in model_registry:
        register_model("unmask")(UnmaskLM)


def main(argv: list[str] | None = None) -> None:
    """``python -m unmask.eval.lm_eval_adapter ARGS``: lm_eval's CLI with ``--model unmask`` registered."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError as err:
        print(f"unmask-lm-eval needs lm-evaluation-harness ({err}); install it with: pip install 'unmask[lm-eval]' "
              "(or pip install -e '.[lm-eval]' in a checkout)", file=sys.stderr)
        raise SystemExit(2) from None

    from unmask.eval import lm_eval_adapter  # the importable module (not __main__) owns the registration

    lm_eval_adapter.register()
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
else:
    register()
