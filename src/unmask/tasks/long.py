"""Several arithmetic problems answered in one response ("long"), for long generations.

An example bundles 3..8 "math" problems, all drawn from the *same* split of the math task, so
a long test example never contains a math train problem. Its key is the sub-problem keys
joined by `||`; its split is the common split of its sub-problems. The target has one section
per problem ("Problem i:" then the worked reasoning then `#### <answer>`); the reference is a
JSON list of the answers. Score = fraction of problems whose section's last `####` answer is
right (sections found by their "Problem i:" headers; without any header, the `####` answers are
taken in order).
"""

from __future__ import annotations

import json
import random
import re

from unmask.tasks.arithmetic import ANSWER_RE, ArithmeticTask, answers_match, extract_answer
from unmask.tasks.base import Example, GeneratedTask, check_split, split_of

HEADER_RE = re.compile(r"Problem (\d+):")
INTROS = [
    "Solve the following {n} problems. Answer them in order; start each answer with \"Problem i:\" "
    "and end it with \"#### <answer>\".",
    "Here are {n} word problems. Work through each one in order, beginning with \"Problem i:\" and "
    "finishing with \"#### <answer>\".",
    "Answer all {n} problems below, one after another. Label each answer \"Problem i:\" and end it with "
    "\"#### <answer>\".",
]


class LongTask(GeneratedTask):
    """Bundles of `min_problems`..`max_problems` math problems (3..5 steps each by default) answered
    in one response; targets are about 200-900 tokens (mean ~510) of a 3k BPE vocabulary."""

    name = "long"

    def __init__(self, min_problems: int = 4, max_problems: int = 8, math: ArithmeticTask | None = None):
        if not 1 <= min_problems <= max_problems:
            raise ValueError(f"need 1 <= min_problems <= max_problems, got {min_problems}, {max_problems}")
        self.min_problems, self.max_problems = min_problems, max_problems
        self.math = math or ArithmeticTask(min_steps=3)

    def sample_key(self, rng: random.Random) -> str:
        """A bundle key with sub-problems from any split (`keyed_examples` draws them per split)."""
        n = rng.randint(self.min_problems, self.max_problems)
        return "||".join(self.math.sample_key(rng) for _ in range(n))

    def keyed_examples(self, split: str, n: int, seed: int = 0) -> list[tuple[str, Example]]:
        check_split(split)
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[tuple[str, Example]] = []
        seen: set[str] = set()
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 100 * n + 1000:
                raise RuntimeError(f"long: found only {len(out)} of {n} distinct {split} examples")
            count = rng.randint(self.min_problems, self.max_problems)
            subs: list[str] = []
            while len(subs) < count:
                sub = self.math.sample_key(rng)
                if split_of(sub) == split and sub not in subs:
                    subs.append(sub)
            key = "||".join(subs)
            if key not in seen:
                seen.add(key)
                out.append((key, self.render(key)))
        return out

    def render(self, key: str) -> Example:
        subs = [self.math.render(k) for k in key.split("||")]
        intro = random.Random("render/" + key).choice(INTROS).format(n=len(subs))
        prompt = "\n\n".join([intro, *(f"Problem {i}: {ex.prompt}" for i, ex in enumerate(subs, 1))])
        target = "\n\n".join(f"Problem {i}:\n{ex.target}" for i, ex in enumerate(subs, 1))
        reference = json.dumps([int(ex.reference) for ex in subs])
        return Example(self.name, self.make_id(key), prompt, target, reference)

    def render_varied(self, key: str, rng: random.Random) -> Example:
        """`render(key)` with each section's reasoning from `ArithmeticTask.render_varied`."""
        ex = self.render(key)
        subs = [self.math.render_varied(k, rng) for k in key.split("||")]
        target = "\n\n".join(f"Problem {i}:\n{sub.target}" for i, sub in enumerate(subs, 1))
        return Example(ex.task, ex.id, ex.prompt, target, ex.reference)

    def score(self, example: Example, completion: str) -> float:
        gold = [str(a) for a in json.loads(example.reference)]
        parts = HEADER_RE.split(completion)
        if len(parts) > 1:
            sections: dict[int, str] = {}
            for num, body in zip(parts[1::2], parts[2::2], strict=False):
                sections.setdefault(int(num), body)
            preds = [extract_answer(sections.get(i, "")) for i in range(1, len(gold) + 1)]
        else:
            preds = [a.replace(",", "") for a in ANSWER_RE.findall(completion)]
        correct = sum(answers_match(p, g) for p, g in zip(preds, gold, strict=False))
        return correct / len(gold)
