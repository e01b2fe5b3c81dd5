"""A Qwen2 byte-level BPE tokenizer from ``vocab.json`` + ``merges.txt`` (Dream's checkpoints ship these and
no ``tokenizer.json``; their ``DreamTokenizer`` is Qwen2's slow tokenizer).

Built with HF ``tokenizers`` the way ``transformers`` converts Qwen2's slow tokenizer to a fast one: NFC
normalisation, Qwen2's pre-tokenisation regex (isolated splits), byte-level mapping without a prefix
space, BPE without an unknown token, byte-level decoding; the added tokens of ``tokenizer_config.json``
(``added_tokens_decoder``) at their ids.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def has_vocab_merges(folder: Path) -> bool:
    return (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file()


def qwen2_tokenizer(folder: Path, config: dict) -> HFTokenizer:
    """The fast tokenizer of ``folder``'s vocab.json + merges.txt with ``config``'s added tokens.

    Raises ``ValueError`` when an added token would not land on the id ``added_tokens_decoder`` gives it.
    """
    tok = HFTokenizer(models.BPE.from_file(str(folder / VOCAB_FILE), str(folder / MERGES_FILE)))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    added = config.get("added_tokens_decoder") or {}
    for index, spec in sorted(added.items(), key=lambda item: int(item[0])):
        spec = spec if isinstance(spec, dict) else {"content": spec}
        token = AddedToken(spec["content"], single_word=spec.get("single_word", False),
                           lstrip=spec.get("lstrip", False), rstrip=spec.get("rstrip", False),
                           normalized=spec.get("normalized", False), special=spec.get("special", True))
        if token.special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        if tok.token_to_id(spec["content"]) != int(index):
            raise ValueError(f"added token {spec['content']!r} should have id {index} but got "
                             f"{tok.token_to_id(spec['content'])} (vocab.json has {tok.get_vocab_size(False)} tokens)")
    return tok
