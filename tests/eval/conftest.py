"""Fixtures for the evaluation harness tests: a stub task and a loaded tiny random checkpoint."""

from __future__ import annotations

import pytest

import unmask
from unmask.tasks.base import Example, Task


class StubTask(Task):
    """Prompts made of the tiny tokenizer's words; a completion scores 1 when its first word is the
    example's answer (a word with an even number), else 0."""

    name = "stub"

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        out = []
        for i in range(n):
            words = " ".join(f"w{(seed + i * 7 + j) % 90}" for j in range(3 + i % 3))
            out.append(Example(task=self.name, id=f"stub-{i}", prompt=f"hello {words}", target="the answer",
                               reference="even"))
        return out

    def score(self, example: Example, completion: str) -> float:
        words = completion.split()
        return 1.0 if words and words[0][1:].isdigit() and int(words[0][1:]) % 2 == 0 else 0.0


@pytest.fixture
def stub_task() -> StubTask:
    return StubTask()


@pytest.fixture
def tiny_lm(tiny_ckpt):
    return unmask.load(tiny_ckpt, device="cpu")
