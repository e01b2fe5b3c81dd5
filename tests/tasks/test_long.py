import json

import pytest

from unmask.tasks.arithmetic import ArithmeticTask
from unmask.tasks.base import SPLITS, split_of
from unmask.tasks.long import LongTask

TASK = LongTask()


@pytest.fixture(scope="module")
def examples():
    return TASK.keyed_examples("train", 100, seed=0) + TASK.keyed_examples("test", 40, seed=0)


def test_deterministic_per_seed():
    assert TASK.examples("validation", 10, seed=4) == LongTask().examples("validation", 10, seed=4)
    assert TASK.examples("validation", 10, seed=4) != TASK.examples("validation", 10, seed=5)


def test_gold_and_partial_scores(examples):
    for _, ex in examples:
        answers = json.loads(ex.reference)
        assert 3 <= len(answers) <= 8
        assert ex.target.count("####") == len(answers)
        assert TASK.score(ex, ex.target) == 1.0
        sections = ex.target.split("\n\n")
        wrong_first = sections[0].rsplit("####", 1)[0] + f"#### {answers[0] + 1}"
        assert TASK.score(ex, "\n\n".join([wrong_first, *sections[1:]])) == pytest.approx(1 - 1 / len(answers))
        # a missing section counts as wrong, the rest still count
        assert TASK.score(ex, "\n\n".join(sections[1:])) == pytest.approx(1 - 1 / len(answers))
        assert TASK.score(ex, "") == 0.0


def test_score_without_headers_uses_order(examples):
    ex = examples[0][1]
    answers = json.loads(ex.reference)
    assert TASK.score(ex, "\n".join(f"#### {a}" for a in answers)) == 1.0


def test_subproblems_come_from_the_same_math_split():
    math_train = {k for k, _ in ArithmeticTask().keyed_examples("train", 2000, seed=0)}
    seen = {}
    for split in SPLITS:
        subs = set()
        for key, _ in TASK.keyed_examples(split, 30, seed=1):
            for sub in key.split("||"):
                assert split_of(sub) == split
                subs.add(sub)
        seen[split] = subs
    assert not (seen["test"] | seen["validation"]) & math_train
    assert not seen["train"] & seen["test"]


def test_long_targets_are_long(examples):
    lengths = [len(ex.target) for _, ex in examples]
    assert max(lengths) > 1300 and min(lengths) > 300
