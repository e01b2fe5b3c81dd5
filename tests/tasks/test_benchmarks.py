import gzip
import json

import pytest

from unmask.tasks import get_task
from unmask.tasks.answers import extract_number, gsm8k_gold, last_boxed, math_equal, strip_string
from unmask.tasks.benchmarks import find_data_files, load_gsm8k, load_humaneval, load_math, load_mbpp


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GSM = [
    {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3+2=<<3+2=5>>5\n#### 5"},
    {"question": "Big numbers?", "answer": "It costs 1,000+234=<<1000+234=1234>>1,234 dollars.\n#### 1,234"},
]


def test_gsm8k_loader_and_score(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM)
    exs = load_gsm8k(path)
    assert [e.reference for e in exs] == ["5", "1234"]
    assert "<<" not in exs[0].target and exs[0].prompt == GSM[0]["question"]
    task = get_task("gsm8k", path=path)
    assert task.examples("test", 1) == exs[:1]
    ex = exs[1]
    assert task.score(ex, "so\n#### 1,234") == 1.0
    assert task.score(ex, "The answer is $1,234.") == 1.0  # last number fallback
    assert task.score(ex, "The answer is \\boxed{1234}. Check: 2 + 2") == 1.0
    assert task.score(ex, "#### 1234.00") == 1.0
    assert task.score(ex, "#### 1235") == 0.0
    assert task.score(ex, "no idea") == 0.0
    assert task.score(ex, "#### 1234 apples, then 7 more") == 1.0


def test_gsm8k_gold_and_extract_number():
    assert gsm8k_gold("x\n#### -3") == "-3"
    with pytest.raises(ValueError):
        gsm8k_gold("no marker")
    assert extract_number("a 1 b 2.5 c") == "2.5"
    assert extract_number("#### 7.") == "7"
    assert extract_number("nothing") is None


MATH = [
    {"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 1"},
    {"problem": "Nested", "solution": "So $x = \\boxed{\\frac{\\sqrt{3}}{\\left(2\\right)}}$ and more {}.",
     "answer": "\\frac{\\sqrt{3}}{(2)}", "unique_id": "test/alg/1.json"},
    {"problem": "Length?", "solution": "\\boxed{5\\text{ cm}}"},
    {"problem": "No answer", "solution": "we never box it"},
]


def test_math_loader_boxed_and_normalisation(tmp_path):
    path = write_jsonl(tmp_path / "math" / "test.jsonl", MATH)
    with pytest.warns(UserWarning, match="no answer"):
        exs = load_math(tmp_path / "math")
    assert [e.reference for e in exs] == ["\\frac{1}{2}", "\\frac{\\sqrt{3}}{(2)}", "5\\text{ cm}"]
    assert exs[1].id == "test/alg/1.json"
    task = get_task("math500", path=path)
    half, nested, cm = exs
    for good in ("\\boxed{\\frac{1}{2}}", "\\boxed{\\dfrac12}", "\\boxed{0.5}", "\\boxed{1/2}",
                 "x \\boxed{\\tfrac{1}{2}}", "first \\boxed{3} then \\boxed{ \\frac {1} {2} }", "#### \\frac{1}{2}"):
        assert task.score(half, good) == 1.0, good
    for bad in ("\\boxed{\\frac{1}{3}}", "1/2", "\\boxed{\\frac{1}{2}", ""):
        assert task.score(half, bad) == 0.0, bad
    assert task.score(nested, "\\boxed{\\frac{\\sqrt3}{\\left(2\\right)}}") == 1.0
    assert task.score(cm, "\\boxed{5}") == 1.0
    assert task.score(cm, "\\boxed{5.0}") == 1.0


def test_last_boxed_edge_cases():
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("a \\boxed{1} b \\boxed{{2}+\\{x\\}} c") == "{2}+\\{x\\}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("$\\boxed 5$") == "5"
    assert last_boxed("\\boxed{unbalanced") is None
    assert last_boxed("nothing here") is None


def test_strip_string():
    assert strip_string("\\left( 3, 4 \\right)") == "(3,4)"
    assert strip_string("50\\%") == "50"
    assert strip_string("90^\\circ") == "90"
    assert strip_string("\\$5.00") == "5"
    assert strip_string("12.0") == "12"
    assert strip_string("x = 7") == "7"
    assert strip_string(".25") == "0.25" and strip_string(".5") == "\\frac{1}{2}"
    assert strip_string("\\sqrt2") == "\\sqrt{2}"
    assert strip_string("\\text{(B)}") == "(B)"
    assert math_equal("3/4", "\\frac{3}{4}") and math_equal("1,000", "1000")
    assert not math_equal(None, "1") and not math_equal("2", "1")


HUMANEVAL = [{
    "task_id": "HumanEval/0",
    "prompt": "from typing import List\n\n\ndef add_all(xs: List[int]) -> int:\n    \"\"\"Sum.\n    >>> add_all([1])\n"
              "    1\n    \"\"\"\n",
    "canonical_solution": "    return sum(xs)\n",
    "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate([1, 2]) == 3\n"
            "    assert candidate([]) == 0\n",
    "entry_point": "add_all",
}]


def test_humaneval_loader_and_score(tmp_path):
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(HUMANEVAL[0]) + "\n")
    (ex,) = load_humaneval(path)
    task = get_task("humaneval", path=path)
    assert ex.id == "HumanEval/0" and "def add_all" in ex.prompt
    assert task.code_prompt(ex) == HUMANEVAL[0]["prompt"]
    assert task.score(ex, HUMANEVAL[0]["canonical_solution"]) == 1.0  # body only
    assert task.score(ex, ex.target) == 1.0
    assert task.score(ex, "    return sum(xs)\n\ndef extra():\nprint(1/0)") == 1.0  # cut at unindented line
    assert task.score(ex, "```python\ndef add_all(xs: List[int]) -> int:\n    return sum(xs)\n```") == 1.0
    assert task.score(ex, "return sum(xs)") == 1.0  # unindented body gets indented
    assert task.score(ex, "    return 3\n") == 0.0
    assert task.score(ex, "    import sys\n    sys.exit(0)\n") == 0.0
    assert task.score(ex, "") == 0.0


MBPP = [{
    "task_id": 11, "text": "Write a function to remove first and last occurrence of a given char.",
    "code": "def remove_Occ(s,ch):\r\n    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1]",
    "test_list": ["assert remove_Occ(\"hello\",\"l\") == \"heo\"", "assert remove_Occ(\"abcda\",\"a\") == \"bcd\""],
    "test_setup_code": "import math", "challenge_test_list": [],
}]


def test_mbpp_loader_and_score(tmp_path):
    write_jsonl(tmp_path / "full" / "test.jsonl", MBPP)
    write_jsonl(tmp_path / "full" / "train.jsonl", [dict(MBPP[0], task_id=601)])
    (ex,) = load_mbpp(tmp_path / "full")
    assert ex.id == "mbpp-11" and "remove_Occ(\"hello\"" in ex.prompt and "import math" in ex.reference
    assert load_mbpp(tmp_path / "full", split="train")[0].id == "mbpp-601"
    task = get_task("mbpp", path=tmp_path / "full")
    assert task.score(ex, ex.target) == 1.0
    assert task.score(ex, "Here:\n```python\nimport re\n" + ex.target + "\n```\nDone") == 1.0
    assert task.score(ex, "def remove_Occ(s, ch):\n    return s") == 0.0


def test_sanitized_mbpp_prompt_field(tmp_path):
    row = {k: v for k, v in MBPP[0].items() if k != "text"} | {"prompt": "Remove chars."}
    path = write_jsonl(tmp_path / "s.jsonl", [row])
    assert load_mbpp(path)[0].prompt.startswith("Remove chars.")


def test_path_resolution_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_gsm8k(tmp_path / "missing.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no data files"):
        load_gsm8k(tmp_path / "empty")
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_gsm8k(bad)
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"q": 1}])
    with pytest.raises(ValueError, match="question"):
        load_gsm8k(wrong)
    # HF-like snapshot: shards of the split are concatenated; hidden folders ignored
    snap = tmp_path / "snap"
    write_jsonl(snap / "main" / "test-00000-of-00002.jsonl", GSM[:1])
    write_jsonl(snap / "main" / "test-00001-of-00002.jsonl", GSM[1:])
    write_jsonl(snap / "main" / "train-00000-of-00001.jsonl", GSM)
    write_jsonl(snap / ".cache" / "test.jsonl", GSM)
    assert [e.reference for e in load_gsm8k(snap)] == ["5", "1234"]
    assert len(load_gsm8k(snap, split="train")) == 2
    with pytest.raises(FileNotFoundError, match="validation"):
        load_gsm8k(snap, split="validation")
    write_jsonl(snap / "socratic" / "test.jsonl", GSM)
    with pytest.raises(ValueError, match="several folders"):
        find_data_files(snap, "test")
    with pytest.raises(ValueError, match="unknown split"):
        load_gsm8k(snap, split="dev")
    # a single data file in a folder is used whatever its name; .json lists too
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "data.json").write_text(json.dumps(GSM))
    assert len(load_gsm8k(tmp_path / "one")) == 2
    (tmp_path / "obj.json").write_text(json.dumps({"test": GSM, "meta": "x"}))
    assert len(load_gsm8k(tmp_path / "obj.json")) == 2
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text(json.dumps(GSM[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_gsm8k(bad_line)


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(GSM), tmp_path / "test-00000-of-00001.parquet")
    assert [e.reference for e in load_gsm8k(tmp_path)] == ["5", "1234"]
