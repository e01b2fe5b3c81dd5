"""Task generators and scorers for the embedded testbed model, and real-benchmark loaders."""

from unmask.tasks.base import SPLITS, Example, GeneratedTask, Task, split_of
from unmask.tasks.corpus import pretrain_text, sft_corpus
from unmask.tasks.registry import BENCHMARK_NAMES, TASK_NAMES, get_task
from unmask.tasks.sandbox import SandboxResult, run_python

__all__ = [
    "BENCHMARK_NAMES", "SPLITS", "TASK_NAMES", "Example", "GeneratedTask", "Task", "get_task", "split_of",
    "pretrain_text", "sft_corpus", "SandboxResult", "run_python",
]
