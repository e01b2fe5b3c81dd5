import re

import pytest

from unmask.tasks.arithmetic import LINE_RE, TEMPLATES, ArithmeticTask, extract_answer

TASK = ArithmeticTask()


@pytest.fixture(scope="module")
def examples():
    return TASK.keyed_examples("train", 400, seed=3) + TASK.keyed_examples("test", 100, seed=3)


def test_deterministic_per_seed():
    assert TASK.examples("train", 50, seed=1) == TASK.examples("train", 50, seed=1)
    assert TASK.examples("test", 20, seed=1) == ArithmeticTask().examples("test", 20, seed=1)
    assert TASK.examples("train", 50, seed=1) != TASK.examples("train", 50, seed=2)


def test_gold_scores_one_and_wrong_scores_zero(examples):
    for _, ex in examples:
        assert TASK.score(ex, ex.target) == 1.0
        wrong = str(int(ex.reference) + 1)
        assert TASK.score(ex, ex.target.rsplit("####", 1)[0] + f"#### {wrong}") == 0.0
        assert TASK.score(ex, ex.target.replace("#### ", "")) == 0.0  # #### is required
    ex = examples[0][1]
    assert TASK.score(ex, f"blah\n#### {ex.reference}\n<|endoftext|>") == 1.0
    assert TASK.score(ex, f"#### 999999\n#### {ex.reference}") == 1.0  # the last one counts
    assert TASK.score(ex, "") == 0.0


def test_extract_answer():
    assert extract_answer("x\n#### 1,234") == "1234"
    assert extract_answer("#### 5\n#### 7 apples") == "7"
    assert extract_answer("the answer is 5") is None


def test_reasoning_is_correct_and_small(examples):
    templates = set()
    for key, ex in examples:
        templates.add(key.split("|")[1])
        lines = ex.target.split("\n")
        assert lines[-1] == f"#### {ex.reference}"
        ops = [LINE_RE.search(ln) for ln in lines[:-1]]
        ops = [m.groups() for m in ops if m]
        assert 2 <= len(ops) <= 5, ex.target
        prev = None
        for a, op, b, c in ops:
            a, b, c = int(a), int(b), int(c)
            # operands are small, or the product computed on the line before; days sums add day values
            assert b <= 50 or b == prev or key.split("|")[1] == "days"
            if op == "+":
                assert a + b == c
            elif op == "-":
                assert a - b == c
            elif op == "*":
                assert a * b == c and min(a, b) <= 9
            else:
                assert a % b == 0 and a // b == c and 2 <= b <= 9
            assert 0 <= c <= 999
            prev = c
        assert int(ops[-1][3]) == int(ex.reference)  # the last line gives the answer
        assert len(ex.target) < 400 and len(ex.prompt) < 500
        assert not re.search(r"-\d", ex.target)  # never negative
    assert templates == set(TEMPLATES)


def test_step_range_is_configurable():
    short = ArithmeticTask(min_steps=2, max_steps=2)
    for ex in short.examples("train", 50):
        assert len(LINE_RE.findall(ex.target)) == 2
    with pytest.raises(ValueError):
        ArithmeticTask(min_steps=4, max_steps=3)


def test_ids_unique_and_prefixed(examples):
    ids = [ex.id for _, ex in examples]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("math-") for i in ids)
    assert all(ex.task == "math" for _, ex in examples)
