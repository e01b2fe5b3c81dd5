import re

import pytest

from unmask.tasks.code import FAMILIES, CodeTask, extract_code, first_function

TASK = CodeTask()


@pytest.fixture(scope="module")
def examples():
    return TASK.keyed_examples("train", 600, seed=5) + TASK.keyed_examples("test", 60, seed=5)


def test_deterministic_per_seed():
    assert TASK.examples("train", 40, seed=1) == CodeTask().examples("train", 40, seed=1)
    assert TASK.examples("train", 40, seed=1) != TASK.examples("train", 40, seed=2)


def test_shape_of_examples(examples):
    families = set()
    for key, ex in examples:
        families.add(key.split("|")[1])
        name = re.match(r"def (\w+)\((\w+)\):\n", ex.target).group(1)
        assert f"`{name}" in ex.prompt
        body = ex.target.split("\n")[1:]
        assert 1 <= len(body) <= 4
        assert all(ln.startswith("    ") and (len(ln) - len(ln.lstrip())) % 4 == 0 for ln in body)
        tests = ex.reference.split("\n")
        assert len(tests) == 3 and all(t.startswith(f"assert {name}(") for t in tests)
    assert families == set(FAMILIES)


def test_gold_passes_in_sandbox(examples):
    # one per family plus a spread of others (sandbox runs take ~50 ms each)
    chosen, seen = [], set()
    for key, ex in examples:
        fam = key.split("|")[1]
        if fam not in seen or len(chosen) < 250:
            seen.add(fam)
            chosen.append(ex)
    assert len(chosen) >= 250
    for ex in chosen:
        assert TASK.score(ex, ex.target) == 1.0, (ex.target, ex.reference)


def test_wrong_code_fails(examples):
    for _, ex in examples[:25]:
        header = ex.target.split("\n")[0]
        assert TASK.score(ex, header + "\n    return None") == 0.0
        assert TASK.score(ex, "") == 0.0
    ex = examples[0][1]
    header = ex.target.split("\n")[0]
    assert CodeTask(timeout_s=1.0).score(ex, header + "\n    while True:\n        pass") == 0.0
    assert TASK.score(ex, ex.target + "\n    x = (") == 0.0  # syntax error


def test_completion_wrappers_are_handled(examples):
    ex = examples[0][1]
    fenced = f"Here is the function:\n```python\n{ex.target}\n```\nIt works."
    assert TASK.score(ex, fenced) == 1.0
    assert TASK.score(ex, f"Sure.\n{ex.target}\n\nprint('junk'\n<|endoftext|>") == 1.0  # cut after the def
    assert TASK.score(ex, ex.target.replace("    ", "\t")) == 1.0
    assert TASK.score(ex, ex.target + "<|eot_id|><|endoftext|><|endoftext|>") == 1.0


def test_extract_code_and_first_function():
    assert extract_code("text\n```py\ndef f():\n    return 1\n```\nmore") == "def f():\n    return 1\n"
    assert extract_code("blah\nimport re\ndef f(): pass") == "import re\ndef f(): pass"
    assert first_function("x = 1\ndef f(a):\n    return a\n\n    # c\nfoo bar\ndef g(): pass") == \
        "def f(a):\n    return a\n\n    # c\n"


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown code families"):
        CodeTask(families=("nope",))
