"""LLaDA's tokenizer side in one place: the special tokens, the chat template and its renderer, loading
a checkpoint's tokenizer (``tokenizer.json`` + ``tokenizer_config.json``, no transformers needed), and
training the small byte-level BPE tokenizer of the embedded testbed model.

A trained tokenizer folder holds ``tokenizer.json`` (HF ``tokenizers``) and ``tokenizer_config.json``
(``bos_token``/``eos_token``/``pad_token`` and a ``chat_template`` of the same shape as
LLaDA-8B-Instruct's), so the same loading code serves the testbed model and the 8B checkpoints.
Digits are split one per token (``Digits(individual_digits=True)``) so that arithmetic stays learnable.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from unmask.models.qwen2_tokenizer import has_vocab_merges, qwen2_tokenizer

# LLaDA's special tokens: the one place their spellings live
MASK_TOKEN = "<|mdm_mask|>"
EOS_TOKEN = "<|endoftext|>"  # also the padding token (LLaDA pads SFT answers with it)
EOT_TOKEN = "<|eot_id|>"
END_OF_TURN_TOKENS = (EOT_TOKEN, "<|im_end|>", "<|role_end|>")  # LLaDA, Qwen2/Dream, LLaDA-MoE: the first found
BOS_TOKEN = "<|startoftext|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
SPECIAL_TOKENS = [BOS_TOKEN, EOS_TOKEN, MASK_TOKEN, START_HEADER_TOKEN, END_HEADER_TOKEN, EOT_TOKEN]

# LLaDA-8B-Instruct's chat template, verbatim (bos_token is prepended to the first message).
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


@functools.lru_cache(maxsize=16)
def _compiled_template(template: str):
    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)


def render_chat(
    messages: Sequence[dict[str, str]], add_generation_prompt: bool = True, template: str = CHAT_TEMPLATE,
    bos_token: str = BOS_TOKEN, eos_token: str = EOS_TOKEN,
) -> str:
    """Render a Jinja chat template as transformers does (sandboxed, trim_blocks and lstrip_blocks); each
    template is compiled once (compiling costs milliseconds, rendering microseconds)."""
    return _compiled_template(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                            bos_token=bos_token, eos_token=eos_token)


def user_prompt_text(prompt: str) -> str:
    """The chat-templated single-turn prompt with the generation prompt, as a plain string.

    Equals ``render_chat([{"role": "user", "content": prompt}])`` (tested), without the cost of Jinja
    for hundreds of thousands of training examples.
    """
    return (f"{BOS_TOKEN}{START_HEADER_TOKEN}user{END_HEADER_TOKEN}\n\n{prompt.strip()}{EOT_TOKEN}"
            f"{START_HEADER_TOKEN}assistant{END_HEADER_TOKEN}\n\n")


def _token_text(value: object) -> str | None:
    """tokenizer_config.json stores special tokens as strings or as {"content": ...} objects."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    """A fast BPE tokenizer with LLaDA's special tokens and the checkpoint's Jinja chat template."""

    def __init__(self, tokenizer: HFTokenizer, config: dict, mask_token_id: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.chat_template: str | None = config.get("chat_template")
        self.bos_token = _token_text(config.get("bos_token")) or BOS_TOKEN
        self.eos_token = _token_text(config.get("eos_token")) or EOS_TOKEN
        self.pad_token = _token_text(config.get("pad_token")) or self.eos_token
        self.eos_id = self._require_id(self.eos_token)
        self.pad_id = self._require_id(self.pad_token)
        self.bos_id = tokenizer.token_to_id(self.bos_token)
        self.eot_id = next((i for t in END_OF_TURN_TOKENS if (i := tokenizer.token_to_id(t)) is not None), None)
        mask_token = _token_text(config.get("mask_token")) or MASK_TOKEN
        self.mask_id = mask_token_id if mask_token_id is not None else self._require_id(mask_token)

    def _require_id(self, token: str) -> int:
        idx = self.tokenizer.token_to_id(token)
        if idx is None:
            raise ValueError(f"tokenizer has no token {token!r}")
        return idx

    @classmethod
    def from_pretrained(cls, folder: str | Path, mask_token_id: int | None = None) -> Tokenizer:
        folder = Path(folder)
        file = folder / TOKENIZER_FILE
        if not file.is_file() and not has_vocab_merges(folder):
            raise FileNotFoundError(f"no tokenizer.json (nor vocab.json + merges.txt) in {str(folder)!r}")
        config: dict = {}
        config_file = folder / TOKENIZER_CONFIG_FILE
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{str(config_file)!r} is not valid JSON: {err}") from err
        template_file = folder / "chat_template.jinja"
        if "chat_template" not in config and template_file.is_file():
            config["chat_template"] = template_file.read_text()
        tokenizer = HFTokenizer.from_file(str(file)) if file.is_file() else qwen2_tokenizer(folder, config)
        return cls(tokenizer, config, mask_token_id)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """End-of-text and end-of-turn: a response is over at the first of either."""
        return tuple(i for i in (self.eos_id, self.eot_id) if i is not None)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat_template; pass chat=False to use raw prompts")
        return render_chat(messages, add_generation_prompt, self.chat_template, self.bos_token, self.eos_token)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_encode(self, texts: list[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``input_ids`` and ``attention_mask`` [B, P] for a batch of texts."""
        encoded = [self.encode(t) for t in texts]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(texts), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            if ids:
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                attention_mask[row, width - len(ids):] = 1
        return input_ids.to(device), attention_mask.to(device)


# ----------------------------------------------------------------------------- training the BPE tokenizer


def build_tokenizer() -> HFTokenizer:
    """An untrained byte-level BPE tokenizer: individual digits, then GPT-2 style byte-level splitting."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = 3072, min_frequency: int = 2) -> HFTokenizer:
    """Train the BPE merges on ``texts``; special tokens take ids 0..5 in ``SPECIAL_TOKENS`` order.

    The result may have fewer than ``vocab_size`` tokens when the corpus is small.
    """
    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def padded_embedding_size(vocab_size: int, multiple: int = 64) -> int:
    """The embedding rows for ``vocab_size`` tokens, rounded up to a multiple of ``multiple``."""
    return -(-vocab_size // multiple) * multiple


def special_ids(tok: HFTokenizer) -> dict[str, int]:
    """Ids of the special tokens: bos, eos, pad (= eos), mask, eot, start_header, end_header."""
    ids = {
        name: tok.token_to_id(t)
        for name, t in [
            ("bos", BOS_TOKEN),
            ("eos", EOS_TOKEN),
            ("mask", MASK_TOKEN),
            ("eot", EOT_TOKEN),
            ("start_header", START_HEADER_TOKEN),
            ("end_header", END_HEADER_TOKEN),
        ]
    }
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens {missing}")
    ids["pad"] = ids["eos"]
    return ids


def tokenizer_config(tok: HFTokenizer, model_max_length: int = 4096) -> dict:
    """``tokenizer_config.json`` in the shape of LLaDA-8B-Instruct's (fast-tokenizer fields + chat template)."""
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    return {
        "added_tokens_decoder": added,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "mask_token": MASK_TOKEN,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def tokenizer_files(tok: HFTokenizer, model_max_length: int = 4096) -> dict[str, str]:
    """File name -> text of ``tokenizer.json`` and ``tokenizer_config.json`` (for ``save_pretrained``)."""
    return {
        TOKENIZER_FILE: tok.to_str(pretty=False),
        TOKENIZER_CONFIG_FILE: json.dumps(tokenizer_config(tok, model_max_length), indent=2) + "\n",
    }


def save_tokenizer(tok: HFTokenizer, folder: str | os.PathLike, model_max_length: int = 4096) -> Path:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in tokenizer_files(tok, model_max_length).items():
        (out / name).write_text(text)
    return out


def load_tokenizer(folder: str | os.PathLike) -> HFTokenizer:
    """The raw ``tokenizers.Tokenizer`` of a folder (fast batch encoding for training)."""
    return HFTokenizer.from_file(str(Path(folder) / TOKENIZER_FILE))
