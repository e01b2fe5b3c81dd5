"""Typer commands of the evaluation harness, mounted by ``unmask.cli``:

    app.command("eval")(eval_command)
    app.command("compare")(compare_command)
    app.command("trace")(trace_command)
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from unmask.cli_errors import friendly_errors
from unmask.decoding.loop import COMPILE_MODES
from unmask.eval.compare import COMPARE_SPECS
from unmask.eval.spec import SPEC_FORMS

console = Console()
COMPILE_HELP = ("Decode step: auto (fused on CUDA, off on CPU), fused (CUDA graphs + torch.compile), "
                "exact (CUDA graphs over the eager kernels: bitwise the eager decode), off (eager).")


def compile_mode(mode: str, no_compile: bool = False) -> bool | str | None:
    """The ``compile=`` argument of ``unmask.load`` for the CLI's ``--compile MODE`` / ``--no-compile``."""
    if no_compile:
        return False
    if mode not in ("auto", *COMPILE_MODES):
        raise typer.BadParameter(f"--compile {mode!r} is not one of auto, {', '.join(COMPILE_MODES)}")
    return {"auto": None, "off": False}.get(mode, mode)


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
    model: str | None = typer.Option(None, "--model", "-m", help="Folder or hub id; default: embedded model."),
    n: int = typer.Option(16, "--n", "-n", help="Examples per task (0: a benchmark's whole file)."),
    split: str = typer.Option("test", help="Split of the synthetic tasks (train, validation, test)."),
    seed: int = typer.Option(0, help="Example-sampling seed (and sampling seed if temperature > 0)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Prompts decoded together."),
    gen_length: int = typer.Option(256, "--gen-length", help="Tokens to generate (multiple of block length)."),
    block_length: int = typer.Option(32, "--block-length", help="Semi-autoregressive block size."),
    early_stop: bool = typer.Option(True, "--early-stop/--no-early-stop", help="Stop rows at end-of-text."),
    temperature: float = typer.Option(0.0, help="Gumbel sampling temperature (0: greedy)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard earlier records in --out."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    dtype: str | None = typer.Option(None, help="float32, bfloat16, float16."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    compile: str = typer.Option("auto", "--compile", help=COMPILE_HELP),
    no_compile: bool = typer.Option(False, "--no-compile", help="Eager decode steps (= --compile off)."),
) -> None:
    """Evaluate a grid of decoding specs x tasks: accuracy, NFE, tokens/NFE, tokens/s, latency, Pareto plot."""
    import unmask
    from unmask.eval.compare import print_report
    from unmask.eval.runner import resolve_tasks, run_eval
    from unmask.eval.spec import parse_specs

    spec_list = parse_specs(specs)  # fail on a bad spec before loading anything
    task_map = resolve_tasks(tasks)
    lm = unmask.load(model, device=device, dtype=dtype, compile=compile_mode(compile, no_compile))
    report = run_eval(lm, spec_list, task_map, out, n=n, split=split, seed=seed, batch_size=batch_size,
                      gen_length=gen_length, block_length=block_length, early_stop=early_stop,
                      temperature=temperature, model_name=model, overwrite=overwrite, progress=progress)
    print_report(report, console=console, title=f"unmask eval: {model or 'embedded testbed model'}")
    console.print(f"[dim]{report.generated} example(s) decoded now; results in {out}/ "
                  f"({', '.join(p.name for p in report.files.values())})[/]")


@friendly_errors
def compare_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Folder or hub id; default: embedded model."),
    n: int | None = typer.Option(None, "--n", "-n", help="Test examples per task (default 16 on GPU, 4 on CPU)."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b",
                                          help="Prompts decoded together (default: n on GPU, 2 on CPU)."),
    gen_length: int = typer.Option(256, "--gen-length", help="Tokens to generate (multiple of block length)."),
    block_length: int = typer.Option(32, "--block-length", help="Semi-autoregressive block size."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Keep records/results/plot here (default: discard)."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    dtype: str | None = typer.Option(None, help="float32, bfloat16, float16."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    compile: str = typer.Option("auto", "--compile", help=COMPILE_HELP),
    no_compile: bool = typer.Option(False, "--no-compile", help="Eager decode steps (= --compile off)."),
) -> None:
    """Quick comparison of the commit policies (topk, threshold, factor, frechet, credit, dual cache) on math/code."""
    from unmask.eval.compare import run_compare

    run_compare(model, n=n, batch_size=batch_size, gen_length=gen_length, block_length=block_length, out_dir=out,
                device=device, dtype=dtype, progress=progress, console=console,
                compile=compile_mode(compile, no_compile))


@friendly_errors
def trace_command(
    prompt: str = typer.Argument(..., help="The prompt to decode (the chat template is applied)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Folder or hub id; default: embedded model."),
    spec: str = typer.Option("threshold:0.9", "--spec", "-s", help=f"Decoding spec: {SPEC_FORMS}."),
    gen_length: int = typer.Option(64, "--gen-length", help="Tokens to generate (multiple of block length)."),
    block_length: int = typer.Option(32, "--block-length", help="Semi-autoregressive block size."),
    out: Path = typer.Option(Path("trace.png"), "--out", "-o", help="PNG to write."),
    early_stop: bool = typer.Option(True, "--early-stop/--no-early-stop", help="Stop at end-of-text."),
    chat: bool = typer.Option(True, "--chat/--raw", help="Apply the chat template to the prompt."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    dtype: str | None = typer.Option(None, help="float32, bfloat16, float16."),
    as_json: bool = typer.Option(False, "--json", help="Print the trace summary as JSON."),
    compile: str = typer.Option("auto", "--compile", help=COMPILE_HELP),
    no_compile: bool = typer.Option(False, "--no-compile", help="Eager decode steps (= --compile off)."),
) -> None:
    """Draw when each token of one generation was committed (step x position, confidence) and print per-step counts."""
    import unmask
    from unmask.eval.spec import parse_spec
    from unmask.eval.trace import trace_generation

    decode_spec = parse_spec(spec)
    lm = unmask.load(model, device=device, dtype=dtype, compile=compile_mode(compile, no_compile))
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
