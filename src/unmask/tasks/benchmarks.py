"""Loaders and scorers for real benchmarks, read from local files only.

Each task takes `path`: a .jsonl / .jsonl.gz / .json / .parquet file (parquet needs pyarrow), or
a directory (e.g. a local Hugging Face dataset snapshot). For a directory, the data files whose
name contains the requested split (`test`, `train`, `validation`/`valid`/`val`/`dev`) are used,
all from one folder (several shards are concatenated); a directory with a single data file uses
it whatever the split. For a file path the split is not used to pick data. `examples(split, n)`
returns the first n records in file order (n <= 0: all); `seed` is unused.
"""

from __future__ import annotations

import gzip
import json
import re
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import Any

from unmask.tasks.answers import extract_number, gsm8k_gold, last_boxed, math_equal, numbers_equal
from unmask.tasks.base import Example, Task, check_split
from unmask.tasks.code import extract_code
from unmask.tasks.sandbox import run_python

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
SPLIT_ALIASES = {"test": ("test",), "train": ("train",), "validation": ("validation", "valid", "val", "dev")}


def _is_data(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(DATA_SUFFIXES)


def _matches_split(p: Path, split: str) -> bool:
    stem = p.name.lower()
    return any(re.search(rf"(^|[^a-z]){alias}([^a-z]|$)", stem) for alias in SPLIT_ALIASES[split])


def find_data_files(path: str | Path, split: str = "test") -> list[Path]:
    """The data file(s) to read for `split` under `path` (see module docstring)."""
    check_split(split)
    p = Path(path).expanduser()
    expected = f"a {'/'.join(DATA_SUFFIXES)} file or a directory containing one"
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory; expected {expected}")
    if p.is_file():
        if not _is_data(p):
            raise ValueError(f"{p}: unsupported file type; expected {expected}")
        return [p]
    hidden = lambda f: any(s.startswith(".") for s in f.relative_to(p).parts)  # noqa: E731
    files = sorted(f for f in p.rglob("*") if _is_data(f) and not hidden(f))
    if not files:
        raise FileNotFoundError(f"{p}: no data files found; expected {expected}")
    chosen = [f for f in files if _matches_split(f, split)] or (files if len(files) == 1 else [])
    if not chosen:
        listing = ", ".join(str(f.relative_to(p)) for f in files[:20])
        raise FileNotFoundError(f"{p}: no data file for split {split!r} (names containing "
                                f"{SPLIT_ALIASES[split]}); found: {listing}")
    folders = {f.parent for f in chosen}
    if len(folders) > 1:
        raise ValueError(f"{p}: {split!r} data in several folders ({', '.join(str(d) for d in sorted(folders))}); "
                         "pass the one you want")
    for suffix in DATA_SUFFIXES:  # one format only, if a folder holds several
        same = [f for f in chosen if f.name.lower().endswith(suffix)]
        if same:
            return same
    return chosen


def _read_file(f: Path, split: str) -> list[dict[str, Any]]:
    name = f.name.lower()
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"{f}: reading parquet needs pyarrow (pip install pyarrow), or convert to .jsonl") from e
        return pq.read_table(f).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(f, "rt", encoding="utf-8") as fh:
        if name.endswith((".jsonl", ".jsonl.gz")):
            rows = []
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{f}:{i}: invalid JSON line ({e})") from e
            return rows
        data = json.load(fh)
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        for k in (split, "data", "examples", "rows"):
            if k in lists:
                return lists[k]
        if len(lists) == 1:
            return next(iter(lists.values()))
        raise ValueError(f"{f}: expected a JSON list of records or an object with one list of records")
    if not isinstance(data, list):
        raise ValueError(f"{f}: expected a JSON list of records")
    return data


def read_records(path: str | Path, split: str = "test", required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """All records of `split` under `path`, checking the `required` fields of the first one."""
    rows: list[dict[str, Any]] = []
    files = find_data_files(path, split)
    for f in files:
        rows += _read_file(f, split)
    if not rows:
        raise ValueError(f"{path}: no records in {', '.join(map(str, files))}")
    missing = [k for k in required if k not in rows[0]]
    if missing:
        raise ValueError(f"{files[0]}: records lack fields {missing}; expected fields {list(required)}, "
                         f"found {sorted(rows[0])}")
    return rows


class Benchmark(Task):
    """A benchmark read from local files; subclasses map records to examples and score."""

    required: tuple[str, ...] = ()  # fields every record must have

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @abstractmethod
    def to_example(self, row: dict[str, Any], index: int) -> Example | None:
        """The example for one record (None to skip it)."""

    def load(self, split: str = "test") -> list[Example]:
        out = []
        for i, row in enumerate(read_records(self.path, split, self.required)):
            ex = self.to_example(row, i)
            if ex is not None:
                out.append(ex)
        return out

    def examples(self, split: str = "test", n: int = 0, seed: int = 0) -> list[Example]:
        rows = self.load(split)
        return rows[:n] if n > 0 else rows


class GSM8K(Benchmark):
    """GSM8K: JSONL with question/answer; gold is the number after '####'. The prediction is
    the number after the last '####', else in the last \\boxed{}, else the last number."""

    name = "gsm8k"
    required = ("question", "answer")

    def to_example(self, row: dict[str, Any], index: int) -> Example:
        target = re.sub(r"<<[^>]*>>", "", row["answer"])  # drop calculator annotations
        return Example(self.name, f"{self.name}-{index}", row["question"], target, gsm8k_gold(row["answer"]))

    def score(self, example: Example, completion: str) -> float:
        return float(numbers_equal(extract_number(completion), example.reference))


class MATH(Benchmark):
    """MATH / MATH-500: problem plus answer, or a solution with a \\boxed{} answer. The prediction
    is the last \\boxed{} of the completion (else the text after '####'); compared after
    `strip_string` normalisation."""

    name = "math500"
    required = ("problem",)

    def to_example(self, row: dict[str, Any], index: int) -> Example | None:
        solution = row.get("solution", "")
        gold = row.get("answer")
        if gold is None:
            gold = last_boxed(solution or "")
        if gold is None:
            warnings.warn(f"{self.path}: record {index} has no answer field and no \\boxed{{}} in its solution; "
                          "skipped", stacklevel=2)
            return None
        ex_id = str(row.get("unique_id") or row.get("id") or f"{self.name}-{index}")
        return Example(self.name, ex_id, row["problem"], solution or str(gold), str(gold))

    def score(self, example: Example, completion: str) -> float:
        pred = last_boxed(completion)
        if pred is None and "####" in completion:
            pred = completion.rsplit("####", 1)[1].strip().split("\n")[0]
        return float(math_equal(pred, example.reference))


HUMANEVAL_INSTRUCTION = "Complete the following Python function.\n```python\n"


class HumanEval(Benchmark):
    """HumanEval: task_id/prompt/canonical_solution/test/entry_point. The completion is a
    function body (appended to the prompt; cut at the first non-indented line) or a full def
    (then prompt + completion, so the prompt's imports stay). Passes if `check(entry_point)` runs
    clean in the sandbox."""

    name = "humaneval"
    required = ("task_id", "prompt", "canonical_solution", "test", "entry_point")

    def __init__(self, path: str | Path, timeout_s: float = 10.0):
        super().__init__(path)
        self.timeout_s = timeout_s

    def to_example(self, row: dict[str, Any], index: int) -> Example:
        prompt = HUMANEVAL_INSTRUCTION + row["prompt"] + "```"
        reference = f"{row['test']}\n\ncheck({row['entry_point']})\n"
        return Example(self.name, row["task_id"], prompt, row["prompt"] + row["canonical_solution"], reference)

    @staticmethod
    def code_prompt(example: Example) -> str:
        """The original HumanEval prompt (signature + docstring) inside example.prompt."""
        return example.prompt[len(HUMANEVAL_INSTRUCTION) : -3]

    def program(self, example: Example, completion: str) -> str:
        head = self.code_prompt(example)
        entry = example.reference.rsplit("check(", 1)[1].split(")")[0]
        if re.search(rf"^\s*def {re.escape(entry)}\s*\(", completion, re.MULTILINE):
            return head + "\n" + extract_code(completion)
        fence = re.search(r"```[ \t]*[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", completion, re.DOTALL)
        lines = (fence.group(1) if fence else completion).split("\n")
        first = next((ln for ln in lines if ln.strip()), "")
        if first and not first[0].isspace():  # unindented body: indent it
            lines = ["    " + ln if ln.strip() else ln for ln in lines]
        end = next((i for i, ln in enumerate(lines) if ln.strip() and not ln[0].isspace()), len(lines))
        return head + "\n".join(lines[:end])

    def score(self, example: Example, completion: str) -> float:
        code = self.program(example, completion) + "\n\n" + example.reference
        return float(run_python(code, timeout_s=self.timeout_s).passed)


class MBPP(Benchmark):
    """MBPP (full or sanitized): text (or prompt)/code/test_list[/test_setup_code]. The prompt
    shows the tests (as in the original MBPP prompt); the extracted code runs with the asserts."""

    name = "mbpp"
    required = ("code", "test_list")

    def __init__(self, path: str | Path, timeout_s: float = 10.0):
        super().__init__(path)
        self.timeout_s = timeout_s

    def to_example(self, row: dict[str, Any], index: int) -> Example:
        text = row.get("text") or row.get("prompt")
        if text is None:
            raise ValueError(f"{self.path}: MBPP record {index} has neither 'text' nor 'prompt'")
        tests = list(row["test_list"])
        prompt = f"{text}\nYour code should pass these tests:\n" + "\n".join(tests)
        setup = row.get("test_setup_code") or ""
        reference = (setup + "\n" if setup else "") + "\n".join(tests) + "\n"
        ex_id = f"{self.name}-{row.get('task_id', index)}"
        return Example(self.name, ex_id, prompt, row["code"].replace("\r\n", "\n"), reference)

    def score(self, example: Example, completion: str) -> float:
        code = extract_code(completion) + "\n\n" + example.reference
        return float(run_python(code, timeout_s=self.timeout_s).passed)


BENCHMARKS: dict[str, type[Benchmark]] = {"gsm8k": GSM8K, "math500": MATH, "humaneval": HumanEval, "mbpp": MBPP}


def load_gsm8k(path: str | Path, split: str = "test") -> list[Example]:
    return GSM8K(path).load(split)


def load_math(path: str | Path, split: str = "test") -> list[Example]:
    return MATH(path).load(split)


def load_humaneval(path: str | Path, split: str = "test") -> list[Example]:
    return HumanEval(path).load(split)


def load_mbpp(path: str | Path, split: str = "test") -> list[Example]:
    return MBPP(path).load(split)
