"""The quick policy comparison ("main job"): every commit policy on a small sample of the math and code
test splits of the embedded testbed model, as one rich table.

Rows: the LLaDA ``topk`` baseline (one token per step), Fast-dLLM ``threshold:0.9`` and
``factor:1.0``, Fast-dLLM++ ``frechet:0.25``, CreditDecoding ``threshold:0.9+credit``, all without
KV cache, plus ``threshold:0.9@dual`` (dual block cache); early stop everywhere.

Cost on a 2-core CPU (measured with a random model of the testbed's shape, 15M parameters, fp32):
a forward processes about 5,500 tokens/s, and without cache each step runs the whole canvas
(prompt + 256), so the baseline costs about 300 x (its NFE) tokens per example, some 4-6 s when
the answer ends in the second or third block. Hence the default sample on the CPU is small (4 per
task, batches of 2 so that a row does not wait long for a slower partner): an estimated 60-90 s in
all (measured: 65 s with gen_length 64 and no early stop on the random model; scaled to 256 with
the answer ending in block 2 and about 3 tokens/NFE for the parallel rules). On a GPU the default
is 16 per task in one batch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from unmask.eval.runner import EvalReport, run_eval

COMPARE_SPECS = ("topk", "threshold:0.9", "factor:1.0", "frechet:0.25", "threshold:0.9+credit", "threshold:0.9@dual")
COMPARE_TASKS = ("math", "code")
GPU_N, CPU_N, CPU_BATCH = 16, 4, 2


def run_compare(
    model: str | None = None,
    *,
    lm: Any = None,
    n: int | None = None,
    batch_size: int | None = None,
    gen_length: int = 256,
    block_length: int = 32,
    specs: tuple[str, ...] | list[str] = COMPARE_SPECS,
    tasks: tuple[str, ...] | list[str] = COMPARE_TASKS,
    out_dir: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    compile: bool | None = None,
    progress: bool = True,
    quantize: str | None = None,
    console: Any = None,
) -> EvalReport:
    """Compare the policies on ``n`` test examples per task and print the table (returns the report).

    Defaults: ``n`` 16 per task in one batch on a GPU, 4 per task in batches of 2 on the CPU.

    ``model``: checkpoint folder or hub id (default: the embedded testbed model); or pass a loaded ``lm``.
    ``out_dir``: keep records/results there (and resume); default: a temporary folder.
    """
    if lm is None:
        import unmask

        lm = unmask.load(model, device=device, dtype=dtype, compile=compile, quantize=quantize)
    on_gpu = getattr(getattr(lm, "device", None), "type", "cpu") == "cuda"
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1 example per task, got {n}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = n or (GPU_N if on_gpu else CPU_N)
    batch_size = batch_size or (n if on_gpu else min(n, CPU_BATCH))
    with tempfile.TemporaryDirectory(prefix="unmask-compare-") as tmp:
        report = run_eval(lm, list(specs), list(tasks), out_dir or tmp, n=n, batch_size=batch_size,
                          gen_length=gen_length, block_length=block_length, early_stop=True, model_name=model,
                          progress=progress, plot=out_dir is not None)
    print_report(report, console=console, title=f"unmask compare: {model or 'embedded testbed model'}")
    return report


def print_report(report: EvalReport, console: Any = None, title: str = "unmask eval") -> None:
    """The aggregates as a rich table: policy, task, accuracy, NFE, tokens/NFE, speedup, seconds."""
    from rich.table import Table

    from unmask.cli_errors import make_console

    console = console or make_console()
    cfg = report.config
    table = Table(title=title, caption=(
        f"task (examples), {cfg.split} split; gen {cfg.gen_length} / block {cfg.block_length}, batch {cfg.batch_size}"
        f", early stop {'on' if cfg.early_stop else 'off'}; acc: accuracy; NFE: mean forwards per example; tok/NFE: "
        "tokens per forward; speedup: topk NFE / NFE; sec: decode seconds in all"))
    table.add_column("policy", no_wrap=True)
    table.add_column("task", no_wrap=True)
    for name in ("acc", "NFE", "tok/NFE", "speedup", "sec"):
        table.add_column(name, justify="right", no_wrap=True)
    for task in cfg.tasks:
        for row in (r for r in report.rows if r["task"] == task):
            speedup = "-" if row["nfe_speedup"] is None else f"{row['nfe_speedup']:.2f}x"
            table.add_row(row["spec"], f"{row['task']} ({row['n']})", f"{row['accuracy']:.3f}",
                          f"{row['mean_nfe']:.1f}", f"{row['tokens_per_nfe']:.2f}", speedup, f"{row['seconds']:.2f}")
    console.print(table)
