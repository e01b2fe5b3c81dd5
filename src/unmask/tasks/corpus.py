"""Training corpora built from the generated tasks."""

from __future__ import annotations

import random
from collections.abc import Iterator

from unmask.tasks.base import Example, GeneratedTask
from unmask.tasks.registry import get_task

DEFAULT_PRETRAIN = {"math": 20_000, "code": 5_000, "long": 1_000}


def sft_corpus(
    n_per_task: dict[str, int], split: str = "train", seed: int = 0, varied: bool | float = False
) -> list[Example]:
    """n_per_task[name] examples of each task from `split`, shuffled together (deterministic).

    ``varied``: each row's target is worded in a style drawn for that row (``GeneratedTask.varied_examples``,
    deterministic given the seed; the testbed-varied model) instead of the canonical target of its key; a
    number in (0, 1] is the share of rows so drawn (``True`` = 1).
    """
    out: list[Example] = []
    for name, n in n_per_task.items():
        task = get_task(name)
        if varied and isinstance(task, GeneratedTask):
            out += task.varied_examples(split, n, seed, share=float(varied))
        else:
            out += task.examples(split, n, seed)
    random.Random(f"corpus/{split}/{seed}").shuffle(out)
    return out


def pretrain_text(n_per_task: dict[str, int] | None = None, split: str = "train", seed: int = 0) -> Iterator[str]:
    """Plain texts for tokenizer training / pretraining: each example's prompt, then its target."""
    for ex in sft_corpus(n_per_task or DEFAULT_PRETRAIN, split, seed):
        yield ex.prompt
        yield ex.target
