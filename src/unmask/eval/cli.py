"""Typer commands of the evaluation harness, mounted by ``unmask.cli``:

    app.command("eval")(eval_command)
    app.command("compare")(compare_command)
    app.command("trace")(trace_command)
    app.command("sweep")(sweep_command)
    app.command("tune")(tune_command)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from unmask.cli_errors import friendly_errors, make_console
from unmask.decoding.loop import COMPILE_MODES
from unmask.eval.compare import COMPARE_SPECS
from unmask.eval.distributed import is_main
from unmask.eval.spec import SPEC_FORMS
from unmask.threads import THREADS_HELP, set_cpu_threads

console = make_console()
QUIET_HELP = "No progress bar and no closing summary line (the results table stays)."
COMPILE_HELP = ("Decode step: auto (fused on CUDA, off on CPU), fused (CUDA graphs + torch.compile), "
                "exact (CUDA graphs over the eager kernels: bitwise the eager decode), off (eager).")

# Options of several commands (typer reads an option's object, it does not change it: one serves them all).
MODEL_OPTION = typer.Option(None, "--model", "-m", help="Folder or hub id; default: embedded model.")
BLOCK_LENGTH_OPTION = typer.Option(32, "--block-length", help="Semi-autoregressive block size.")
EARLY_STOP_OPTION = typer.Option(True, "--early-stop/--no-early-stop", help="Stop rows at end-of-text.")
TEMPERATURE_OPTION = typer.Option(0.0, help="Gumbel sampling temperature (0: greedy).")
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Discard earlier records in --out.")
DEVICE_OPTION = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
DTYPE_OPTION = typer.Option(None, help="float32, bfloat16, float16.")
PROGRESS_OPTION = typer.Option(True, "--progress/--no-progress", help="Show a progress bar (on a terminal).")
COMPILE_OPTION = typer.Option("auto", "--compile", help=COMPILE_HELP)
NO_COMPILE_OPTION = typer.Option(False, "--no-compile", help="Eager decode steps (= --compile off).")
THREADS_OPTION = typer.Option(None, "--threads", help=THREADS_HELP)
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help=QUIET_HELP)
QUANTIZE_HELP = ("Quantization of the linear layers at load: int8, int4 (groups of 128) or fp8 weight-only, or "
                 "fp8-w8a8 (fp8 weights and activations, fp8 matmuls) (default: the checkpoint's dtype; a checkpoint "
                 "saved quantized loads as saved).")
QUANTIZE_OPTION = typer.Option(None, "--quantize", help=QUANTIZE_HELP)


def gen_length_option(default: int) -> Any:
    """``--gen-length``, with a command's default."""
    return typer.Option(default, "--gen-length", help="Tokens to generate (multiple of block length).")


def compile_mode(mode: str, no_compile: bool = False) -> bool | str | None:
    """The ``compile=`` argument of ``unmask.load`` for the CLI's ``--compile MODE`` / ``--no-compile``."""
    if no_compile:
        return False
    if mode not in ("auto", *COMPILE_MODES):
        raise typer.BadParameter(f"--compile {mode!r} is not one of auto, {', '.join(COMPILE_MODES)}")
    return {"auto": None, "off": False}.get(mode, mode)


def show_progress(progress: bool, quiet: bool) -> bool:
    """A progress bar only if asked for, not ``--quiet``, and where stdout is a terminal (none in logs)."""
    return progress and not quiet and console.is_terminal


def load_model(model: str | None, device: str | None, dtype: str | None, compile: bool | str | None,
               threads: int | None, quantize: str | None = None) -> Any:
    """Set torch's CPU threads, then load the model: the last step before a command decodes."""
    import unmask

    set_cpu_threads(device, threads)
    lm = unmask.load(model, device=device, dtype=dtype, compile=compile, quantize=quantize)
    if lm.device.type != "cuda" and compile in ("fused", "exact"):
        import sys

        note = ("compiles the step's kernels but captures no CUDA graph there: many times slower than eager"
                if compile == "fused" else "captures no CUDA graph there: it decodes eagerly, as --compile off")
        print(f"warning: --compile {compile} on the {lm.device.type.upper()} {note}; CUDA graphs need a GPU",
              file=sys.stderr)
    return lm


def print_done(generated: int, out: Path, files: dict[str, Path]) -> None:
    """The closing summary line of an eval or sweep: what was decoded now and where the results are."""
    console.print(f"[dim]{generated} example(s) decoded now; results in {out}/ "
                  f"({', '.join(p.name for p in files.values())})[/]")


def check_run(n: int, batch_size: int, gen_length: int, block_length: int, temperature: float = 0.0) -> None:
    """The settings an eval, sweep or tune run shares, checked before the model loads."""
    from unmask.checks import check_float
    from unmask.decoding.loop import check_lengths

    check_lengths(gen_length, block_length)
    if n < 0:
        raise ValueError(f"--n must be >= 0 examples per task (0: a benchmark's whole file), got {n}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    check_float("--temperature", temperature, 0)


MAX_SAMPLES = 100_000


def check_bootstrap(samples: int, boot_seed: int, confidence: float, drop: float | None = None) -> None:
    """The bootstrap settings of a sweep or tune, checked before the model loads."""
    from unmask.checks import check_float, check_int

    if drop is not None:
        check_float("--drop", drop, 0, 1, high_open=True)
    check_int("--samples", samples, 1, MAX_SAMPLES)
    check_int("--boot-seed", boot_seed, 0, 2**64 - 1)
    check_float("--confidence", confidence, 0, 1, low_open=True, high_open=True)


@friendly_errors
def eval_command(
    specs: list[str] = typer.Option(
        list(COMPARE_SPECS), "--spec", "-s",
        help=f"Decoding spec (repeat or comma-separate; default: the compare set): {SPEC_FORMS}.",
    ),
    tasks: list[str] = typer.Option(
        ["math", "code"], "--task", "-t",
        help="Task (repeat): math, code, long, or a benchmark with its local data: gsm8k=PATH, math500=PATH, "
        "humaneval=PATH, mbpp=PATH.",
    ),
    out: Path = typer.Option(Path("eval-out"), "--out", "-o", help="Output folder (records.jsonl, results.*, "
                             "pareto.png); an interrupted run resumes there."),
    model: str | None = MODEL_OPTION,
    n: int = typer.Option(16, "--n", "-n", help="Examples per task (0: a benchmark's whole file)."),
    split: str = typer.Option("test", help="Split of the synthetic tasks (train, validation, test)."),
    seed: int = typer.Option(0, help="Example-sampling seed (and sampling seed if temperature > 0)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Prompts decoded together."),
    gen_length: int = gen_length_option(256),
    block_length: int = BLOCK_LENGTH_OPTION,
    early_stop: bool = EARLY_STOP_OPTION,
    temperature: float = TEMPERATURE_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    device: str | None = DEVICE_OPTION,
    dtype: str | None = DTYPE_OPTION,
    quantize: str | None = QUANTIZE_OPTION,
    progress: bool = PROGRESS_OPTION,
    compile: str = COMPILE_OPTION,
    no_compile: bool = NO_COMPILE_OPTION,
    threads: int | None = THREADS_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Evaluate a grid of decoding specs x tasks: accuracy, NFE, tokens/NFE, tokens/s, latency, Pareto plot."""
    from unmask.eval.compare import print_report
    from unmask.eval.runner import resolve_tasks, run_eval
    from unmask.eval.spec import parse_specs

    spec_list = parse_specs(specs)  # fail on a bad spec before loading anything
    task_map = resolve_tasks(tasks)
    check_run(n, batch_size, gen_length, block_length, temperature)
    mode = compile_mode(compile, no_compile)
    lm = load_model(model, device, dtype, mode, threads, quantize)
    report = run_eval(lm, spec_list, task_map, out, n=n, split=split, seed=seed, batch_size=batch_size,
                      gen_length=gen_length, block_length=block_length, early_stop=early_stop,
                      temperature=temperature, model_name=model, overwrite=overwrite,
                      progress=show_progress(progress, quiet))
    if not is_main():  # torchrun: rank 0 prints
        return
    print_report(report, console=console, title=f"unmask eval: {model or 'embedded testbed model'}")
    if not quiet:
        print_done(report.generated, out, report.files)


@friendly_errors
def compare_command(
    model: str | None = MODEL_OPTION,
    n: int | None = typer.Option(None, "--n", "-n", help="Test examples per task (default 16 on GPU, 4 on CPU)."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b",
                                          help="Prompts decoded together (default: n on GPU, 2 on CPU)."),
    gen_length: int = gen_length_option(256),
    block_length: int = BLOCK_LENGTH_OPTION,
    out: Path | None = typer.Option(None, "--out", "-o", help="Keep records/results/plot here (default: discard)."),
    device: str | None = DEVICE_OPTION,
    dtype: str | None = DTYPE_OPTION,
    quantize: str | None = QUANTIZE_OPTION,
    progress: bool = PROGRESS_OPTION,
    compile: str = COMPILE_OPTION,
    no_compile: bool = NO_COMPILE_OPTION,
    threads: int | None = THREADS_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (the table stays)."),
) -> None:
    """Quick comparison of the commit policies (topk, threshold, factor, frechet, credit, dual cache) on math/code."""
    from unmask.eval.compare import run_compare

    check_run(1 if n is None else n, 1 if batch_size is None else batch_size, gen_length, block_length)
    mode = compile_mode(compile, no_compile)
    set_cpu_threads(device, threads)
    run_compare(model, n=n, batch_size=batch_size, gen_length=gen_length, block_length=block_length, out_dir=out,
                device=device, dtype=dtype, progress=show_progress(progress, quiet), console=console, compile=mode,
                quantize=quantize)


@friendly_errors
def trace_command(
    prompt: str = typer.Argument(..., help="The prompt to decode (the chat template is applied)."),
    model: str | None = MODEL_OPTION,
    spec: str = typer.Option("threshold:0.9", "--spec", "-s", help=f"Decoding spec: {SPEC_FORMS}."),
    gen_length: int = gen_length_option(64),
    block_length: int = BLOCK_LENGTH_OPTION,
    out: Path = typer.Option(Path("trace.png"), "--out", "-o", help="PNG to write."),
    early_stop: bool = typer.Option(True, "--early-stop/--no-early-stop", help="Stop at end-of-text."),
    chat: bool = typer.Option(True, "--chat/--raw", help="Apply the chat template to the prompt."),
    device: str | None = DEVICE_OPTION,
    dtype: str | None = DTYPE_OPTION,
    quantize: str | None = QUANTIZE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the trace summary as JSON."),
    compile: str = COMPILE_OPTION,
    no_compile: bool = NO_COMPILE_OPTION,
    threads: int | None = THREADS_OPTION,
) -> None:
    """Draw when each token of one generation was committed (step x position, confidence) and print per-step counts."""
    from unmask.decoding.loop import check_lengths
    from unmask.eval.spec import parse_spec
    from unmask.eval.trace import trace_generation

    decode_spec = parse_spec(spec)
    check_lengths(gen_length, block_length)
    mode = compile_mode(compile, no_compile)
    lm = load_model(model, device, dtype, mode, threads, quantize)
    trace = trace_generation(lm, prompt, decode_spec, gen_length=gen_length, block_length=block_length,
                             early_stop=early_stop, chat=chat, out=out)
    summary = {"spec": trace.spec, "nfe": trace.nfe, "tokens": trace.length, "tokens_per_nfe": trace.tokens_per_nfe,
               "step_counts": trace.step_counts, "early_stop_filled": trace.early_stop_filled,
               "text": trace.text, "png": str(trace.path)}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console.print(trace.text, markup=False, highlight=False)
    console.print(f"[dim]{trace.spec} | NFE {trace.nfe} | {trace.length} tokens | "
                  f"{trace.tokens_per_nfe:.2f} tokens/NFE | early-stop fill {trace.early_stop_filled}[/]")
    console.print("tokens committed per step: " + " ".join(str(c) for c in trace.step_counts), highlight=False)
    console.print(f"[dim]wrote {trace.path}[/]")


SWEEP_POLICY_HELP = "Policy to sweep (repeat or comma-separate; default: topk, threshold, factor, frechet)."
SWEEP_GRID_HELP = ("Knob values of one policy, NAME=V1,V2,... with NAME a policy or its knob (repeat): "
                   "threshold=0.5,0.7,0.9, factor=0.5,1,2, frechet=0,0.25 (or margin=...), topk=64,128 (steps); "
                   "a policy's further option as POLICY.OPTION=V1,V2 (klass.kl=0.01,0.02), crossed with its knob. "
                   "Default: tau 0.5-0.99, f 0.25-2, delta 0-0.5, topk steps gen_length/2 and /4.")
SWEEP_CREDIT_HELP = ("Credit coefficients crossed at each policy's default knob, NAME=V1,V2,... with NAME in "
                     "alpha, beta, gamma (repeat); 'none': no coefficient grid. Default: alpha=0.3,0.65,1 "
                     "beta=0.5,0.7,0.9.")
SWEEP_VARIANTS_HELP = "Credit variants of each parallel rule: plain, credit, credit-adaptive (default: all three)."
SWEEP_TASK_HELP = "Task (repeat), as in eval: math, code, long, or a benchmark with its local data (gsm8k=PATH)."

# The options a sweep and a tune share.
POLICY_OPTION = typer.Option(None, "--policy", "-p", help=SWEEP_POLICY_HELP)
GRID_OPTION = typer.Option(None, "--grid", "-g", help=SWEEP_GRID_HELP)
CREDIT_GRID_OPTION = typer.Option(None, "--credit-grid", help=SWEEP_CREDIT_HELP)
VARIANTS_OPTION = typer.Option(None, "--variants", help=SWEEP_VARIANTS_HELP)
CACHE_OPTION = typer.Option("none", help="KV cache of every swept setting (the topk baseline runs without); "
                            "several separated by ';' sweep the cache too, e.g. 'dual;prompt_stale(every=2)'.")
SWEEP_TASK_OPTION = typer.Option(["math"], "--task", "-t", help=SWEEP_TASK_HELP)
SWEEP_SEED_OPTION = typer.Option(0, help="Example-sampling seed.")
SWEEP_BATCH_OPTION = typer.Option(32, "--batch-size", "-b", help="Prompts decoded together.")
SAMPLES_OPTION = typer.Option(1000, "--samples", help="Bootstrap resamples.")
BOOT_SEED_OPTION = typer.Option(0, "--boot-seed", help="Bootstrap seed.")
CONFIDENCE_OPTION = typer.Option(0.95, "--confidence", help="Interval level.")


def _sweep_grid(policies: list[str] | None, grid: list[str] | None, credit_grid: list[str] | None,
                variants: list[str] | None, cache: str, gen_length: int, block_length: int) -> tuple[Any, list[Any]]:
    """The grid of a sweep or tune and its specs, built before loading anything (a bad grid fails first)."""
    from unmask.eval.sweep import build_grid

    sweep_grid = build_grid(policies or (), grid or (), credit_grid or (), variants or (), cache)
    return sweep_grid, sweep_grid.specs(gen_length, block_length)


def _print_specs(specs: list[Any], n: int, tasks: list[str]) -> None:
    typer.echo(f"{len(specs)} settings x {len(tasks)} task(s) x {n} examples:")
    typer.echo(" ".join(s.label for s in specs))


@friendly_errors
def sweep_command(
    policies: list[str] | None = POLICY_OPTION,
    grid: list[str] | None = GRID_OPTION,
    credit_grid: list[str] | None = CREDIT_GRID_OPTION,
    variants: list[str] | None = VARIANTS_OPTION,
    cache: str = CACHE_OPTION,
    tasks: list[str] = SWEEP_TASK_OPTION,
    out: Path = typer.Option(Path("sweep-out"), "--out", "-o", help="Output folder (records.jsonl, results.*, "
                             "sweep.json, sweep.md, frontier.png); an interrupted or widened sweep resumes there."),
    model: str | None = MODEL_OPTION,
    n: int = typer.Option(512, "--n", "-n", help="Examples per task (0: a benchmark's whole file)."),
    split: str = typer.Option("dev", help="Split to sweep on: dev (= validation), train, test."),
    seed: int = SWEEP_SEED_OPTION,
    batch_size: int = SWEEP_BATCH_OPTION,
    gen_length: int = gen_length_option(256),
    block_length: int = BLOCK_LENGTH_OPTION,
    early_stop: bool = EARLY_STOP_OPTION,
    drop: float = typer.Option(0.01, "--drop", help="Matched accuracy = baseline accuracy - DROP."),
    samples: int = SAMPLES_OPTION,
    boot_seed: int = BOOT_SEED_OPTION,
    confidence: float = CONFIDENCE_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the settings and stop."),
    overwrite: bool = OVERWRITE_OPTION,
    device: str | None = DEVICE_OPTION,
    dtype: str | None = DTYPE_OPTION,
    quantize: str | None = QUANTIZE_OPTION,
    progress: bool = PROGRESS_OPTION,
    compile: str = COMPILE_OPTION,
    no_compile: bool = NO_COMPILE_OPTION,
    threads: int | None = THREADS_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Sweep each policy's knob (with and without credit) on a dev split: Pareto fronts, NFE and tokens/s at
    the baseline's accuracy - 1 point, with bootstrap intervals."""
    from unmask.eval.runner import resolve_tasks
    from unmask.eval.sweep import resolve_split, run_sweep
    from unmask.eval.sweep_report import print_sweep

    sweep_grid, specs = _sweep_grid(policies, grid, credit_grid, variants, cache, gen_length, block_length)
    task_map = resolve_tasks(tasks)
    resolve_split(split)
    check_run(n, batch_size, gen_length, block_length)
    check_bootstrap(samples, boot_seed, confidence, drop)
    mode = compile_mode(compile, no_compile)
    if dry_run:
        if is_main():
            _print_specs(specs, n, list(task_map))
        return
    lm = load_model(model, device, dtype, mode, threads, quantize)
    report = run_sweep(lm, sweep_grid, task_map, out, n=n, split=split, seed=seed, batch_size=batch_size,
                       gen_length=gen_length, block_length=block_length, early_stop=early_stop, drop=drop,
                       samples=samples, boot_seed=boot_seed, confidence=confidence, model_name=model,
                       overwrite=overwrite, progress=show_progress(progress, quiet))
    if not is_main():
        return
    print_sweep(report, console=console)
    if not quiet:
        print_done(report.eval.generated, out, report.files)


@friendly_errors
def tune_command(
    eps: float = typer.Option(0.01, "--eps", help="Admissible: dev accuracy >= baseline accuracy - EPS on every "
                              "task; the cheapest (mean NFE / baseline NFE) wins."),
    policies: list[str] | None = POLICY_OPTION,
    grid: list[str] | None = GRID_OPTION,
    credit_grid: list[str] | None = CREDIT_GRID_OPTION,
    variants: list[str] | None = VARIANTS_OPTION,
    cache: str = CACHE_OPTION,
    tasks: list[str] = SWEEP_TASK_OPTION,
    out: Path = typer.Option(Path("tune-out"), "--out", "-o", help="Output folder: dev/ (the sweep), test/, "
                             "tune.json, tune.md; resumable."),
    sweep_dir: Path | None = typer.Option(None, "--sweep-dir", help="Reuse (and complete) this sweep folder "
                                          "instead of OUT/dev; same grid options and settings."),
    model: str | None = MODEL_OPTION,
    n: int = typer.Option(512, "--n", "-n", help="Dev examples per task."),
    test_n: int | None = typer.Option(None, "--test-n", help="Test examples per task (default: --n)."),
    dev_split: str = typer.Option("dev", "--dev-split", help="Split to select on: dev (= validation), train."),
    test_split: str = typer.Option("test", "--test-split", help="Split to report on."),
    seed: int = SWEEP_SEED_OPTION,
    batch_size: int = SWEEP_BATCH_OPTION,
    gen_length: int = gen_length_option(256),
    block_length: int = BLOCK_LENGTH_OPTION,
    early_stop: bool = EARLY_STOP_OPTION,
    samples: int = SAMPLES_OPTION,
    boot_seed: int = BOOT_SEED_OPTION,
    confidence: float = CONFIDENCE_OPTION,
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard earlier records in the dev and test folders."),
    device: str | None = DEVICE_OPTION,
    dtype: str | None = DTYPE_OPTION,
    quantize: str | None = QUANTIZE_OPTION,
    progress: bool = PROGRESS_OPTION,
    compile: str = COMPILE_OPTION,
    no_compile: bool = NO_COMPILE_OPTION,
    threads: int | None = THREADS_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Pick the spec with the lowest NFE whose dev accuracy is >= baseline - eps, and report it on the test split."""
    from rich.table import Table

    from unmask.eval.runner import resolve_tasks
    from unmask.eval.sweep import resolve_split
    from unmask.eval.tune import TUNE_COLUMNS, run_tune, summary_rows

    sweep_grid, _ = _sweep_grid(policies, grid, credit_grid, variants, cache, gen_length, block_length)
    task_map = resolve_tasks(tasks)
    resolve_split(dev_split)
    resolve_split(test_split)
    if not 0 <= eps < 1:
        raise ValueError(f"--eps must be in [0, 1) (accuracy, 0.01 = one point), got {eps}")
    check_run(n, batch_size, gen_length, block_length)
    if test_n is not None and test_n < 0:
        raise ValueError(f"--test-n must be >= 0 examples per task, got {test_n}")
    check_bootstrap(samples, boot_seed, confidence)
    mode = compile_mode(compile, no_compile)
    lm = load_model(model, device, dtype, mode, threads, quantize)
    report = run_tune(lm, sweep_grid, task_map, out, eps=eps, n=n, test_n=test_n, dev_split=dev_split,
                      test_split=test_split, sweep_dir=sweep_dir, seed=seed, batch_size=batch_size,
                      gen_length=gen_length, block_length=block_length, early_stop=early_stop, samples=samples,
                      boot_seed=boot_seed, confidence=confidence, model_name=model, overwrite=overwrite,
                      progress=show_progress(progress, quiet))
    if not is_main():
        return
    table = Table(title=f"unmask tune: chose {report.selection.spec} (eps {eps:g})")
    for name in TUNE_COLUMNS:
        table.add_column(name, justify="left" if name in ("task", "split (n)", "spec") else "right")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)
    if not quiet:
        console.print(f"[dim]{report.sweep.eval.generated} dev example(s) decoded now; {out}/tune.md, "
                      f"{out}/tune.json; sweep in {report.sweep.out_dir}/[/]")
