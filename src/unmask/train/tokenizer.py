"""Train a small byte-level BPE tokenizer with LLaDA-8B-Instruct's special tokens and chat template.

The output folder holds ``tokenizer.json`` (HF ``tokenizers``) and ``tokenizer_config.json``
(``bos_token``/``eos_token``/``pad_token`` and a ``chat_template`` of the same shape as
LLaDA-8B-Instruct's), so the same loading code serves the testbed model and the 8B checkpoints.

Digits are split one per token (``Digits(individual_digits=True)``) so that arithmetic stays learnable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from unmask.models.tokenizer import BOS_TOKEN as BOS
from unmask.models.tokenizer import END_HEADER_TOKEN as END_HEADER
from unmask.models.tokenizer import EOS_TOKEN as EOS  # also the padding token (LLaDA pads SFT answers with it)
from unmask.models.tokenizer import EOT_TOKEN as EOT
from unmask.models.tokenizer import MASK_TOKEN as MASK
from unmask.models.tokenizer import START_HEADER_TOKEN as START_HEADER

SPECIAL_TOKENS = [BOS, EOS, MASK, START_HEADER, END_HEADER, EOT]

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


def user_prompt_text(prompt: str) -> str:
    """The chat-templated single-turn prompt with the generation prompt, as a plain string.

    Equals ``render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)``
    (tested), without the cost of Jinja for hundreds of thousands of examples.
    """
    return f"{BOS}{START_HEADER}user{END_HEADER}\n\n{prompt.strip()}{EOT}{START_HEADER}assistant{END_HEADER}\n\n"


def render_chat(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True, bos_token: str = BOS) -> str:
    """Render ``CHAT_TEMPLATE`` with Jinja (the reference for ``user_prompt_text``)."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders templates
    return env.from_string(CHAT_TEMPLATE).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt, bos_token=bos_token
    )


def build_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE tokenizer: individual digits, then GPT-2 style byte-level splitting."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = 3072, min_frequency: int = 2) -> Tokenizer:
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


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """Ids of the special tokens: bos, eos, pad (= eos), mask, eot, start_header, end_header."""
    ids = {
        name: tok.token_to_id(t)
        for name, t in [
            ("bos", BOS),
            ("eos", EOS),
            ("mask", MASK),
            ("eot", EOT),
            ("start_header", START_HEADER),
            ("end_header", END_HEADER),
        ]
    }
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens {missing}")
    ids["pad"] = ids["eos"]
    return ids


def tokenizer_config(tok: Tokenizer, model_max_length: int = 4096) -> dict:
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
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "mask_token": MASK,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def tokenizer_files(tok: Tokenizer, model_max_length: int = 4096) -> dict[str, str]:
    """File name -> text of ``tokenizer.json`` and ``tokenizer_config.json`` (for ``save_pretrained``)."""
    return {
        TOKENIZER_FILE: tok.to_str(pretty=False),
        TOKENIZER_CONFIG_FILE: json.dumps(tokenizer_config(tok, model_max_length), indent=2) + "\n",
    }


def save_tokenizer(tok: Tokenizer, folder: str | os.PathLike, model_max_length: int = 4096) -> Path:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in tokenizer_files(tok, model_max_length).items():
        (out / name).write_text(text)
    return out


def load_tokenizer(folder: str | os.PathLike) -> Tokenizer:
    """The raw ``tokenizers.Tokenizer`` of a folder (fast batch encoding for training)."""
    return Tokenizer.from_file(str(Path(folder) / TOKENIZER_FILE))
