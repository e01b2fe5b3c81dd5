"""Tasks by name: the synthetic tasks of the embedded testbed model and the real benchmarks."""

from __future__ import annotations

from typing import Any

from unmask.tasks.arithmetic import ArithmeticTask
from unmask.tasks.base import Task
from unmask.tasks.benchmarks import BENCHMARKS
from unmask.tasks.code import CodeTask
from unmask.tasks.long import LongTask

SYNTHETIC_TASKS: dict[str, type[Task]] = {"math": ArithmeticTask, "code": CodeTask, "long": LongTask}
TASK_NAMES: tuple[str, ...] = tuple(SYNTHETIC_TASKS)
BENCHMARK_NAMES: tuple[str, ...] = tuple(BENCHMARKS)


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name: "math", "code", "long", or a benchmark ("gsm8k", "math500",
    "humaneval", "mbpp") which needs `path=` (a local file or directory)."""
    given = f" (given as {name}={kwargs['path']})" if "path" in kwargs else ""
    if name in SYNTHETIC_TASKS:
        if "path" in kwargs:
            raise ValueError(f"task {name!r} is generated and takes no data path{given}")
        return SYNTHETIC_TASKS[name](**kwargs)
    if name in BENCHMARKS:
        if "path" not in kwargs:
            raise TypeError(f"benchmark task {name!r} needs a local data path: get_task({name!r}, path=...)")
        return BENCHMARKS[name](**kwargs)
    raise ValueError(f"unknown task {name!r}{given}; allowed: {', '.join(TASK_NAMES + BENCHMARK_NAMES)}")
