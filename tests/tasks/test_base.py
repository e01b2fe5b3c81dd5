import dataclasses

import pytest

from unmask.tasks import BENCHMARK_NAMES, TASK_NAMES, Example, get_task, split_of
from unmask.tasks.base import SPLITS, check_split, stable_hash


def test_example_is_frozen():
    ex = Example("math", "id", "p", "t", "1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ex.target = "x"  # type: ignore[misc]


def test_registry_names():
    assert TASK_NAMES == ("math", "code", "long")
    for name in TASK_NAMES:
        assert get_task(name).name == name


def test_unknown_task_lists_allowed():
    with pytest.raises(ValueError) as e:
        get_task("nope")
    for name in TASK_NAMES + BENCHMARK_NAMES:
        assert name in str(e.value)


def test_benchmark_needs_path():
    with pytest.raises(TypeError, match="path"):
        get_task("gsm8k")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_unknown_split_names_value_and_allowed(name):
    with pytest.raises(ValueError) as e:
        get_task(name).examples("dev", 3)
    msg = str(e.value)
    assert "'dev'" in msg and "train" in msg and "validation" in msg and "test" in msg
    with pytest.raises(ValueError):
        check_split("Test")


def test_split_of_is_stable_and_roughly_90_5_5():
    assert stable_hash("abc") == stable_hash("abc") != stable_hash("abd")
    counts = {"train": 0, "validation": 0, "test": 0}
    for i in range(20000):
        counts[split_of(f"key{i}")] += 1
    assert 17600 < counts["train"] < 18400
    assert 800 < counts["validation"] < 1200 and 800 < counts["test"] < 1200


@pytest.mark.parametrize("name, n", [("math", 300), ("code", 150)])
def test_splits_disjoint_across_seeds(name, n):
    task = get_task(name)
    keys = {s: set() for s in SPLITS}
    for split in SPLITS:
        for seed in (0, 1, 2):
            pairs = task.keyed_examples(split, n, seed=seed)
            assert len({k for k, _ in pairs}) == n  # deduped within a call
            assert all(split_of(k) == split for k, _ in pairs)
            keys[split] |= {k for k, _ in pairs}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
