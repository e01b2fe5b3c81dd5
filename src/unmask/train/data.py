"""Training data as tensors, in LLaDA's SFT layout (Nie et al. 2025, Appendix B / SFT guideline).

One SFT row::

    [chat-templated prompt + generation prompt] [response tokens] <|eot_id|> <|endoftext|> ... <|endoftext|>
    |<------------- prompt_len ------------->| |<------------------ answer (the target) ------------------>|

The end-of-text padding IS part of the answer: it gets masked and predicted like response tokens,
which is what makes LLaDA fill the tail of a generation with end-of-text. The prompt is never masked.

Pretraining-style rows (plain text packed into fixed-length chunks) have ``prompt_len = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from unmask.models.tokenizer import special_ids, user_prompt_text


@dataclass
class TokenData:
    """``input_ids`` [N, seq_len] (padded with end-of-text), ``prompt_len`` [N], ``length`` [N].

    ``length`` is the unpadded length (prompt + response + end-of-turn); ``prompt_len == 0`` marks a
    pretraining row. Stored as int32 on the CPU; batches are cast to int64 on the device.
    """

    input_ids: torch.Tensor
    prompt_len: torch.Tensor
    length: torch.Tensor
    tasks: list[str] | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def subset(self, idx: torch.Tensor | Sequence[int]) -> TokenData:
        idx = torch.as_tensor(idx, dtype=torch.long)
        tasks = [self.tasks[i] for i in idx.tolist()] if self.tasks is not None else None
        return TokenData(self.input_ids[idx], self.prompt_len[idx], self.length[idx], tasks)

    @staticmethod
    def concat(parts: Sequence[TokenData]) -> TokenData:
        L = max(p.seq_len for p in parts)
        if any(p.seq_len != L for p in parts):
            raise ValueError("cannot concatenate TokenData of different seq_len")
        tasks = None
        if all(p.tasks is not None for p in parts):
            tasks = [t for p in parts for t in p.tasks]
        return TokenData(
            torch.cat([p.input_ids for p in parts]),
            torch.cat([p.prompt_len for p in parts]),
            torch.cat([p.length for p in parts]),
            tasks,
        )


def pack_sft_rows(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    seq_len: int,
    eot_id: int,
    eos_id: int,
    drop_long: bool = True,
) -> tuple[TokenData, list[int]]:
    """Rows ``prompt + response + [eot]`` padded with ``eos`` to ``seq_len``.

    Returns the data and the indices of the input pairs that were kept (rows longer than
    ``seq_len`` are dropped when ``drop_long``, otherwise an error is raised).
    """
    kept: list[int] = []
    rows: list[list[int]] = []
    plens: list[int] = []
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        row = list(p) + list(r) + [eot_id]
        if len(row) > seq_len:
            if drop_long:
                continue
            raise ValueError(f"example {i} has {len(row)} tokens > seq_len={seq_len}")
        kept.append(i)
        rows.append(row)
        plens.append(len(p))
    ids = np.full((len(rows), seq_len), eos_id, dtype=np.int32)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = row
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int32)
    return TokenData(torch.from_numpy(ids), torch.tensor(plens, dtype=torch.int32), lengths), kept


def encode_sft(
    examples: Sequence,
    tokenizer: Tokenizer,
    seq_len: int,
    drop_long: bool = True,
) -> TokenData:
    """SFT ``Example``s (``.prompt`` = user message, ``.target`` = response, ``.task``) -> ``TokenData``.

    The prompt is the chat template with the generation prompt (LLaDA-8B-Instruct's shape); prompt
    and response are tokenised separately, as at inference the response is generated after the
    templated prompt. Uses the fast batch encoder of ``tokenizers`` (parallel in Rust).
    """
    ids = special_ids(tokenizer)
    prompts = [user_prompt_text(ex.prompt) for ex in examples]
    responses = [ex.target for ex in examples]
    p_enc = tokenizer.encode_batch(prompts, add_special_tokens=False)
    r_enc = tokenizer.encode_batch(responses, add_special_tokens=False)
    data, kept = pack_sft_rows(
        [e.ids for e in p_enc], [e.ids for e in r_enc], seq_len, ids["eot"], ids["eos"], drop_long
    )
    data.tasks = [examples[i].task for i in kept]
    return data


def encode_pretrain(texts: Sequence[str], tokenizer: Tokenizer, seq_len: int) -> TokenData:
    """Plain texts joined with end-of-text and cut into ``seq_len`` chunks (``prompt_len = 0``)."""
    eos = special_ids(tokenizer)["eos"]
    stream: list[int] = []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        stream.extend(enc.ids)
        stream.append(eos)
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"pretraining text has {len(stream)} tokens, fewer than seq_len={seq_len}")
    ids = torch.tensor(stream[: n * seq_len], dtype=torch.int32).view(n, seq_len)
    zeros = torch.zeros(n, dtype=torch.int32)
    return TokenData(ids, zeros, torch.full((n,), seq_len, dtype=torch.int32), ["pretrain"] * n)


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, bucket_factor: int = 50
) -> list[torch.Tensor]:
    """One epoch of batch indices grouped by length: shuffle, sort within chunks of
    ``batch_size * bucket_factor`` rows, cut into batches, shuffle the batches.

    Rows of similar length share a batch so that dynamic padding (``trim_batch``) wastes little.
    The last incomplete batch is dropped.
    """
    perm = torch.randperm(len(lengths), generator=generator)
    chunk = batch_size * bucket_factor
    batches = []
    for s in range(0, len(perm), chunk):
        part = perm[s : s + chunk]
        part = part[torch.argsort(lengths[part], stable=True)]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part) - batch_size + 1, batch_size))
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def trim_batch(input_ids: torch.Tensor, length: torch.Tensor, multiple: int = 64, extra: int = 0) -> torch.Tensor:
    """Cut the common end-of-text padding of a batch down to the longest row (+ ``extra`` tokens) rounded
    up to ``multiple``.

    LLaDA's SFT guideline pads to the longest sequence of the mini-batch; rounding up keeps a few
    end-of-text targets in every batch and the number of distinct shapes small (for torch.compile).
    ``extra`` keeps more of the padding: with length-bucketed batches the padding is otherwise so short
    that the canvas length gives the answer length away, and the model then misjudges answers on a
    longer canvas at inference (the trainer draws ``extra`` per batch, ``TrainConfig.pad_extra``).
    """
    L = int(length.max()) + 1 + extra  # at least one end-of-text target after the longest row
    L = min(input_ids.shape[1], -(-L // multiple) * multiple)
    return input_ids[:, :L]
