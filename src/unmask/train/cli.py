"""``unmask train``: train a LLaDA-architecture model with the masked-diffusion objective.

Mounted by ``unmask.cli`` as ``app.command("train")(train_command)``, or run directly:
``python -m unmask.train.cli --config testbed --out runs/testbed --max-minutes 8``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from unmask.cli_errors import friendly_errors
from unmask.models.loading import read_config, resolve_device, resolve_model_path
from unmask.tasks.registry import TASK_NAMES
from unmask.threads import THREADS_HELP, set_cpu_threads
from unmask.train.presets import load_preset
from unmask.train.selection import SELECTORS


def _parse_sizes(text: str | None) -> dict[str, int] | None:
    """``"math=200000,code=80000"`` -> ``{"math": 200000, "code": 80000}``."""
    if not text:
        return None
    sizes = {}
    for part in text.split(","):
        name, _, n = part.partition("=")
        if not n.strip().isdigit():
            raise typer.BadParameter(f"expected task=count pairs like 'math=1000,code=500', got {text!r}")
        if name.strip() in sizes:
            raise typer.BadParameter(f"task {name.strip()!r} given twice in {text!r}")
        if name.strip() not in TASK_NAMES:
            raise typer.BadParameter(f"unknown task {name.strip()!r} in {text!r} (allowed: {', '.join(TASK_NAMES)})")
        sizes[name.strip()] = int(n)
    return sizes


@friendly_errors
def train_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (model/, train_log.json, loss.png)."),
    config: str = typer.Option("testbed", "--config", "-c", help="Preset name (testbed, tiny) or a JSON file."),
    steps: int | None = typer.Option(None, help="Maximum optimiser steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Rows per step."),
    lr: float | None = typer.Option(None, help="Peak learning rate (AdamW)."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop and save after this long (0: no limit)."
    ),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Row length; longer examples are dropped."),
    device: str | None = typer.Option(None, help="cuda, cpu, cuda:1, ... (default: cuda if available)."),
    seed: int | None = typer.Option(None, help="Seed for data, init and masking."),
    tokenizer_vocab: int | None = typer.Option(None, "--tokenizer-vocab", help="BPE vocabulary size."),
    train_sizes: str | None = typer.Option(
        None, "--train-sizes", help="Training examples per task: 'math=200000,code=80000,long=20000'."
    ),
    val_sizes: str | None = typer.Option(None, "--val-sizes", help="Validation examples per task."),
    workers: int | None = typer.Option(None, help="Processes generating the corpus (0: all cores)."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Validate every N steps (0: at the end only)."),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Show a progress bar."),
    select: str | None = typer.Option(
        None, "--select", help="Online batch selection: all (plain SFT), random, high_loss, uds (UDS, candidates "
        "scored at one shared mask ratio), uds_legacy (UDS scored on each row's own noise, the first port)."
    ),
    fraction: float | None = typer.Option(
        None, "--fraction", help="Selection budget: train on this share of each candidate batch of batch_size/fraction."
    ),
    uds_alpha: float | None = typer.Option(None, "--uds-alpha", help="UDS weight of diversity (default 2.5e-3)."),
    pad_extra: int | None = typer.Option(
        None, "--pad-extra", help="Keep up to this many more end-of-text padding tokens per batch (drawn "
        "uniformly), so that the canvas length does not give the answer length away."
    ),
    semi_ar: float | None = typer.Option(
        None, "--semi-ar", help="Share of rows noised like a semi-autoregressive decoding canvas (clean "
        "prefix, noised block, masked rest), in [0, 1]; 0 = LLaDA's uniform masking only."
    ),
    semi_ar_block: int | None = typer.Option(None, "--semi-ar-block", help="Block width of --semi-ar rows (32)."),
    varied: bool | None = typer.Option(
        None, "--varied/--canonical", help="Targets worded in a style drawn per row (paraphrased steps, free "
        "order of independent steps, varied code; the testbed-varied model), train and validation rows alike; "
        "default: the canonical target of each example."
    ),
    varied_share: float | None = typer.Option(
        None, "--varied-share", help="With --varied: the share of rows in [0, 1] worded in a drawn style (1)."
    ),
    init: str | None = typer.Option(
        None, "--init", help="Fine-tune this checkpoint (folder, hub id, or an embedded model's name: testbed "
        "(= embedded), testbed-varied) "
        "with its tokenizer, instead of training a fresh model."
    ),
    threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no log lines."),
) -> None:
    """Train a LLaDA-architecture model (masked-diffusion SFT) and write a directly loadable folder."""
    from unmask.train.pipeline import run

    if select is not None and select not in SELECTORS:
        raise typer.BadParameter(f"--select must be one of {', '.join(SELECTORS)}; got {select!r}")
    if pad_extra is not None and pad_extra < 0:
        raise typer.BadParameter(f"--pad-extra must be >= 0 tokens, got {pad_extra}")
    if semi_ar is not None and not 0 <= semi_ar <= 1:
        raise typer.BadParameter(f"--semi-ar must be in [0, 1], got {semi_ar}")
    if semi_ar_block is not None and semi_ar_block < 1:
        raise typer.BadParameter(f"--semi-ar-block must be >= 1 token, got {semi_ar_block}")
    if fraction is not None and not 0 < fraction <= 1:
        raise typer.BadParameter(f"--fraction must be in (0, 1], got {fraction}")
    preset = load_preset(config)
    t, d = preset.train, preset.data
    for obj, name, value in [
        (t, "steps", steps),
        (t, "batch_size", batch_size),
        (t, "lr", lr),
        (t, "device", device),
        (t, "seed", seed),
        (t, "eval_every", eval_every),
        (t, "compile", compile),
        (t, "progress", progress),
        (t, "selector", select),
        (t, "selection_fraction", fraction),
        (t, "uds_alpha", uds_alpha),
        (t, "pad_extra", pad_extra),
        (t, "semi_ar_prob", semi_ar),
        (t, "semi_ar_block", semi_ar_block),
        (d, "seq_len", seq_len),
        (d, "tokenizer_vocab", tokenizer_vocab),
        (d, "workers", workers),
        (d, "seed", seed),
        (d, "varied", varied),
        (d, "varied_share", varied_share),
        (d, "n_per_task", _parse_sizes(train_sizes)),
        (d, "n_val_per_task", _parse_sizes(val_sizes)),
    ]:
        if value is not None:
            setattr(obj, name, value)
    if max_minutes is not None:
        t.max_minutes = max_minutes or None
    if quiet:
        t.progress, t.quiet = False, True
    preset.check()  # every setting, before the corpus is drawn
    if t.device not in ("auto", ""):
        resolve_device(t.device)  # a device this machine lacks fails now
    set_cpu_threads(None if t.device in ("auto", "") else t.device, threads)
    from unmask.api import named_model_folder

    named = named_model_folder(init) if init is not None else None
    if named is not None:
        init = str(named)
    elif init is not None:
        read_config(resolve_model_path(init))  # a missing or broken checkpoint fails now
    run(preset, out, log=(lambda *_: None) if quiet else typer.echo, init=init)


if __name__ == "__main__":
    typer.run(train_command)
