"""Task interface and split assignment by stable hashing (the registry of tasks: ``tasks/registry.py``)."""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Example:
    """One task instance.

    prompt: the user message; target: full reference response (the SFT target);
    reference: gold used by the scorer (a number for math, test code for code tasks,
    a JSON list of numbers for long).
    """

    task: str
    id: str
    prompt: str
    target: str
    reference: str


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


def stable_hash(key: str, hex_chars: int = 16) -> str:
    """Process-independent hash of a key (blake2b), as hex."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()[:hex_chars]


def split_of(key: str) -> str:
    """Assign a canonical key to a split: 90% train, 5% validation, 5% test."""
    bucket = int(stable_hash("split:" + key), 16) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


class Task(ABC):
    """A task: deterministic example generation/loading plus a scorer."""

    name: str = ""

    @abstractmethod
    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        """n examples of `split` (deterministic given seed)."""

    @abstractmethod
    def score(self, example: Example, completion: str) -> float:
        """Score a model completion for `example`: 1.0/0.0 or a fraction."""


MAX_EXAMPLES = 1_000_000  # per call of a generated task: more would take minutes just to draw


class GeneratedTask(Task):
    """A synthetic task whose examples are pure functions of a canonical key.

    Subclasses implement `sample_key(rng)` (draw a candidate key) and `render(key)`. Each
    key's split is `split_of(key)`, so splits are disjoint by construction whatever the seed.
    """

    max_tries_per_example = 400

    @abstractmethod
    def sample_key(self, rng: random.Random) -> str: ...

    @abstractmethod
    def render(self, key: str) -> Example: ...

    def render_varied(self, key: str, rng: random.Random) -> Example:
        """The example of `key` with its SFT target worded in a style drawn from `rng` (same id, prompt and
        reference, so the scorer and the evaluation are unchanged); default: `render(key)`."""
        return self.render(key)

    def varied_examples(self, split: str, n: int, seed: int = 0, share: float = 1.0) -> list[Example]:
        """`examples(split, n, seed)` with each row's target from `render_varied`, its style drawn per row
        (a RNG seeded by task, split, seed and row): a key drawn again elsewhere gets another wording.
        ``share``: the probability that a row is varied; the others keep their canonical target."""
        out = []
        for i, (key, example) in enumerate(self.keyed_examples(split, n, seed)):
            rng = random.Random(f"vary/{self.name}/{split}/{seed}/{i}")
            out.append(self.render_varied(key, rng) if share >= 1.0 or rng.random() < share else example)
        return out

    def make_id(self, key: str) -> str:
        return f"{self.name}-{stable_hash(key)}"

    def keyed_examples(self, split: str, n: int, seed: int = 0) -> list[tuple[str, Example]]:
        """Like `examples` but returns (canonical key, example) pairs."""
        check_split(split)
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_EXAMPLES:
            raise ValueError(f"{self.name}: n must be an integer in [0, {MAX_EXAMPLES:,}] examples, got {n!r}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[tuple[str, Example]] = []
        seen: set[str] = set()
        tries, max_tries = 0, self.max_tries_per_example * n + 10_000
        while len(out) < n:
            tries += 1
            if tries > max_tries:
                raise ValueError(
                    f"{self.name}: found only {len(out)} of {n} distinct {split} examples "
                    f"after {max_tries} candidates; the key space is too small for this n"
                )
            key = self.sample_key(rng)
            if key in seen or split_of(key) != split:
                continue
            seen.add(key)
            out.append((key, self.render(key)))
        return out

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        return [ex for _, ex in self.keyed_examples(split, n, seed)]
