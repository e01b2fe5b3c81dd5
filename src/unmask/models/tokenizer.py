"""Tokenizer + chat template from ``tokenizer.json`` and ``tokenizer_config.json`` (no transformers needed)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

# LLaDA's special tokens: the one place their spellings live
MASK_TOKEN = "<|mdm_mask|>"
EOS_TOKEN = "<|endoftext|>"
EOT_TOKEN = "<|eot_id|>"
BOS_TOKEN = "<|startoftext|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"


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
        self.eot_id = tokenizer.token_to_id(EOT_TOKEN)
        self.mask_id = mask_token_id if mask_token_id is not None else self._require_id(MASK_TOKEN)

    def _require_id(self, token: str) -> int:
        idx = self.tokenizer.token_to_id(token)
        if idx is None:
            raise ValueError(f"tokenizer has no token {token!r}")
        return idx

    @classmethod
    def from_pretrained(cls, folder: str | Path, mask_token_id: int | None = None) -> Tokenizer:
        folder = Path(folder)
        file = folder / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {str(folder)!r}")
        config: dict = {}
        config_file = folder / "tokenizer_config.json"
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{str(config_file)!r} is not valid JSON: {err}") from err
        template_file = folder / "chat_template.jinja"
        if "chat_template" not in config and template_file.is_file():
            config["chat_template"] = template_file.read_text()
        return cls(HFTokenizer.from_file(str(file)), config, mask_token_id)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """End-of-text and end-of-turn: a response is over at the first of either."""
        return tuple(i for i in (self.eos_id, self.eot_id) if i is not None)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat_template; pass chat=False to use raw prompts")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        template = env.from_string(self.chat_template)
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               bos_token=self.bos_token, eos_token=self.eos_token)

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
