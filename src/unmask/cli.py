"""The ``unmask`` command line: generate, compare, eval, sweep, tune, trace, bench, train, serve,
playground."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from unmask.cli_errors import OneLineErrorsGroup, friendly_errors, make_console
from unmask.decoding.config import DEFAULT_SPEC, DecodeConfig
from unmask.decoding.credit import CreditConfig
from unmask.decoding.loop import check_lengths
from unmask.decoding.policies import POLICY_NAMES, REGISTRY
from unmask.eval.cli import (
    BLOCK_LENGTH_OPTION,
    COMPILE_OPTION,
    DEVICE_OPTION,
    EARLY_STOP_OPTION,
    MODEL_OPTION,
    NO_COMPILE_OPTION,
    QUANTIZE_HELP,
    QUANTIZE_OPTION,
    TEMPERATURE_OPTION,
    THREADS_OPTION,
    compare_command,
    compile_mode,
    eval_command,
    gen_length_option,
    load_model,
    sweep_command,
    trace_command,
    tune_command,
)
from unmask.eval.spec import SPEC_FORMS, parse_spec
from unmask.models.cache import cache_forms
from unmask.serve.cli import playground_command, serve_command
from unmask.threads import THREADS_HELP, set_cpu_threads
from unmask.train.cli import train_command

app = typer.Typer(
    cls=OneLineErrorsGroup,  # click's usage errors on one line too
    add_completion=False,
    no_args_is_help=True,
    help="unmask: fast decoding for diffusion language models (LLaDA). Without --model, the embedded "
    "testbed model is used.",
)
console = make_console()


def read_prompts(prompts: list[str] | None, file: Path | None) -> list[str]:
    """Prompts from arguments, or from a file: JSON lines with a "prompt" field, or plain lines."""
    found = list(prompts or [])
    if file is not None:
        if file.is_dir():
            raise ValueError(f"prompt file {str(file)!r} is a directory; give a JSON-lines or text file")
        if not file.exists():
            raise FileNotFoundError(f"prompt file {str(file)!r} does not exist")
        if not file.is_file():  # a device (/dev/zero), a pipe, a socket: never read to its end
            raise ValueError(f"prompt file {str(file)!r} is not a regular file; give a JSON-lines or text file")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"prompt file {str(file)!r} is not UTF-8 text ({err.reason} at byte {err.start})") \
                from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if file.suffix in (".jsonl", ".json") or line.lstrip().startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{file}:{number} is not valid JSON ({err.msg})") from err
                if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                    raise ValueError(f"{file}:{number} needs a string field \"prompt\"")
                found.append(record["prompt"])
            else:
                found.append(line)
    if not found:
        raise ValueError("no prompt given: pass PROMPT arguments or --file")
    return found


def parse_knobs(items: list[str]) -> dict[str, str]:
    """``["threshold=0.8"]`` -> ``{"threshold": "0.8"}`` (the policy registry checks names and values)."""
    knobs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"--knob {item!r} must look like NAME=VALUE, e.g. threshold=0.8")
        if name.strip() in knobs:
            raise ValueError(f"--knob {name.strip()} given twice")
        knobs[name.strip()] = value.strip()
    return knobs


def knob_numbers(knobs: dict[str, str]) -> dict[str, object]:
    """``--knob`` values read as their knob's numbers (a value that is not one fails here, naming it); an unknown
    name stays as given, for the decoder's 'unknown policy option' error."""
    out: dict[str, object] = {}
    for name, value in knobs.items():
        knob = next((cls.knob for cls in REGISTRY.values() if cls.knob.name == name), None)
        out[name] = value if knob is None else knob.parse(value, name, text=True)
    return out


def build_credit(credit: bool, alpha: float | None, beta: float | None, gamma: float | None,
                 adaptive: bool) -> CreditConfig | None:
    """The ``--credit`` options as a ``CreditConfig``; a coefficient given without ``--credit`` is an error."""
    given = {name: value for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)) if value is not None}
    if not credit:
        stray = [f"--credit-{name} {value}" for name, value in given.items()] + ["--credit-adaptive"] * adaptive
        if stray:
            raise ValueError(f"{', '.join(stray)} given without --credit; add --credit or drop it")
        return None
    if adaptive and given:
        raise ValueError(f"--credit-adaptive sets the coefficients itself; drop "
                         f"{', '.join(f'--credit-{name} {value}' for name, value in given.items())}")
    return CreditConfig(**given, adaptive=adaptive)


@app.command()
@friendly_errors
def generate(
    prompts: list[str] | None = typer.Argument(None, help="One or more prompts (the chat template is applied)."),
    file: Path | None = typer.Option(None, "--file", "-f", help="Prompts file: JSON lines {\"prompt\": ...} or text."),
    model: str | None = MODEL_OPTION,
    policy: str | None = typer.Option(None, help=f"Commit policy: {', '.join(POLICY_NAMES)} (default: {DEFAULT_SPEC}, "
                                                 "the fast default; topk: LLaDA's baseline)."),
    spec: str | None = typer.Option(None, "--spec", "-s", help=f"Instead of --policy/--cache/--credit: {SPEC_FORMS}."),
    gen_length: int = gen_length_option(128),
    block_length: int = BLOCK_LENGTH_OPTION,
    steps: int | None = typer.Option(None, help=REGISTRY["topk"].knob.help + "."),
    threshold: float | None = typer.Option(None, help=REGISTRY["threshold"].knob.help + "."),
    factor: float | None = typer.Option(None, help=REGISTRY["factor"].knob.help + "."),
    margin: float | None = typer.Option(None, help=REGISTRY["frechet"].knob.help + "."),
    knob: list[str] | None = typer.Option(
        None, "--knob", help="A policy's option as NAME=VALUE (any registered policy, e.g. --knob threshold=0.8)."
    ),
    cache: str = typer.Option("none", help=f"KV cache: {cache_forms()} (e.g. 'prompt_stale(every=2)')."),
    credit: bool = typer.Option(False, "--credit/--no-credit", help="Fuse CreditDecoding trace credits."),
    credit_alpha: float | None = typer.Option(None, "--credit-alpha", help="Credit weight alpha (default 0.65)."),
    credit_beta: float | None = typer.Option(None, "--credit-beta", help="Credit decay beta (default 0.7)."),
    credit_gamma: float | None = typer.Option(None, "--credit-gamma", help="Credit exponent gamma (default 0.2)."),
    credit_adaptive: bool = typer.Option(False, "--credit-adaptive", help="Parameter-free credit variant."),
    temperature: float = TEMPERATURE_OPTION,
    scorer: str = typer.Option("confidence", help="confidence, margin, entropy or random."),
    cfg_scale: float = typer.Option(0.0, "--cfg-scale", help="Classifier-free guidance scale (LLaDA)."),
    logits_eos_inf: bool = typer.Option(False, "--logits-eos-inf", help="Never propose end-of-text (LLaDA)."),
    confidence_eos_eot_inf: bool = typer.Option(False, "--confidence-eos-eot-inf", help="LLaDA's EoT confidence 0."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus filter before sampling (Dream), in (0, 1]."),
    top_k: int | None = typer.Option(None, "--top-k", help="Top-k filter before sampling (Dream), >= 1."),
    confidence_from: str = typer.Option("logits", "--confidence-from",
                                        help="logits (the model's softmax: LLaDA, Fast-dLLM) or sampling (the "
                                             "distribution the candidate is drawn from: Dream)."),
    confidence_dtype: str = typer.Option("float64", "--confidence-dtype",
                                         help="float64 (Fast-dLLM, LLaDA's earlier generate.py) or logits (the "
                                              "softmax in the logits' dtype, as LLaDA's generate.py at HEAD)."),
    early_stop: bool = EARLY_STOP_OPTION,
    chat: bool = typer.Option(True, "--chat/--raw", help="Apply the chat template to prompts."),
    seed: int | None = typer.Option(None, help="Random seed (sampling, random scorer)."),
    device: str | None = DEVICE_OPTION,
    dtype: str | None = typer.Option(None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)."),
    quantize: str | None = QUANTIZE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per prompt."),
    compile: str = COMPILE_OPTION,
    no_compile: bool = NO_COMPILE_OPTION,
    threads: int | None = THREADS_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the responses: no progress bar, no summary."),
) -> None:
    """Generate responses with any commit policy, cache mode and credit fusion."""
    check_lengths(gen_length, block_length)  # before the progress bar divides one by the other
    knobs = knob_numbers(parse_knobs(knob or []))
    for name, value in (("steps", steps), ("threshold", threshold), ("factor", factor), ("margin", margin)):
        if value is not None:
            if name in knobs:
                raise ValueError(f"--{name} and --knob {name}=... both given; give one")
            knobs[name] = value
    decoding = {**({} if policy is None else {"policy": policy}), "cache": cache,
                "credit": build_credit(credit, credit_alpha, credit_beta, credit_gamma, credit_adaptive) or False,
                **knobs}
    if spec is not None:
        given = ["--policy"] * (policy is not None) + [f"--{name}" for name in knobs]
        given += ["--cache"] * (cache != "none") + ["--credit"] * credit
        if given:
            raise ValueError(f"give either --spec or {', '.join(given)}, not both")
        decoding = parse_spec(spec).generate_kwargs()
    texts = read_prompts(prompts, file)
    mode = compile_mode(compile, no_compile)
    DecodeConfig.create(gen_length=gen_length, block_length=block_length, **decoding, temperature=temperature,
                        scorer=scorer, cfg_scale=cfg_scale, seed=seed,
                        confidence_dtype=confidence_dtype, top_p=top_p, top_k=top_k,
                        confidence_from=confidence_from)  # every setting checked before loading
    lm = load_model(model, device, dtype, mode, threads, quantize)
    with Progress(TextColumn("[dim]decoding {task.fields[rows]} prompt(s)"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("blocks"), TimeElapsedColumn(), console=console, transient=True,
                  disable=as_json or quiet or not console.is_terminal) as bar:
        task = bar.add_task("decode", total=gen_length // block_length, rows=len(texts))
        out = lm.generate(
            texts, gen_length=gen_length, block_length=block_length, **decoding,
            on_block=lambda done, total: bar.update(task, completed=done),
            temperature=temperature, scorer=scorer, cfg_scale=cfg_scale, logits_eos_inf=logits_eos_inf,
            confidence_eos_eot_inf=confidence_eos_eot_inf, early_stop=early_stop, chat=chat, seed=seed,
            confidence_dtype=confidence_dtype, top_p=top_p, top_k=top_k, confidence_from=confidence_from,
        )
    if as_json:
        for i, text in enumerate(out.texts):
            record = {"prompt": texts[i], "response": text, "tokens": int(out.lengths[i]),
                      "nfe": int(out.nfe_per_row[i]), "batch_nfe": out.nfe, "seconds": out.elapsed_s}
            sys.stdout.write(json.dumps(record) + "\n")
        return
    for i, text in enumerate(out.texts):
        if not quiet:
            console.rule(f"[bold]prompt {i + 1}[/]: {texts[i][:80]}")
        console.print(text, markup=False, highlight=False)
    if quiet:
        return
    console.print(
        f"[dim]{len(texts)} prompt(s) | policy {out.config.build_policy()!r} | cache {out.config.cache} | "
        f"NFE {out.nfe} | "
        f"tokens/NFE {out.tokens_per_nfe:.2f} | {out.elapsed_s:.2f} s[/]"
    )


app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("compare")(compare_command)
app.command("trace")(trace_command)
app.command("sweep")(sweep_command)
app.command("tune")(tune_command)
app.command("serve")(serve_command)
app.command("playground")(playground_command)


@app.command()
@friendly_errors
def bench(
    model: str | None = typer.Option(None, "--model", "-m", help="Folder or hub id (default: embedded model)."),
    random_weights: str | None = typer.Option(
        None, "--random-weights",
        help="Benchmark a shape with random weights: llada-8b, llada-moe-7b-a1b, dream-7b (*-tiny: small ones).",
    ),
    batch: list[int] = typer.Option([1, 32], "--batch", help="Batch sizes (repeat the option)."),
    cache: list[str] = typer.Option(["none", "prefix", "dual"], "--cache", help="Cache modes (repeatable)."),
    prompt_length: int = typer.Option(256, "--prompt-length"),
    gen_length: int = typer.Option(256, "--gen-length"),
    block_length: int = typer.Option(32, "--block-length"),
    dtype: str | None = typer.Option(None, help="bfloat16 (GPU default), float16, float32 (CPU default)."),
    device: str | None = typer.Option(None, help="cuda, cpu, ... (default: cuda if available)."),
    repeats: int = typer.Option(10, help="Timed repeats per measurement (median reported)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write bench.json and bench.md here."),
    mode: list[str] | None = typer.Option(
        None, "--mode",
        help="eager, exact (CUDA graphs), fused (CUDA graphs + torch.compile); default: all on CUDA, eager on CPU.",
    ),
    threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
    quantize: str | None = typer.Option(None, "--quantize", help=QUANTIZE_HELP),
    expert_path: str | None = typer.Option(
        None, "--expert-path", help="MoE models: fused (Triton, few tokens), grouped (F.grouped_mm), loop; "
        "default auto."),
) -> None:
    """Per-step latency and tokens/s of each cache mode, beside the weight-read and FLOP floors."""
    from unmask.eval.speed import run_bench

    if model is not None and random_weights is not None:
        raise ValueError(f"give --model {model!r} or --random-weights {random_weights!r}, not both")
    set_cpu_threads(device, threads)
    command = "unmask " + " ".join(sys.argv[1:])
    run_bench(model, random_weights, out, tuple(batch), tuple(cache), prompt_length, gen_length, block_length,
              dtype, device, repeats, command, log=console.print, modes=tuple(mode) if mode else None,
              quantize=quantize, expert_path=expert_path)


if __name__ == "__main__":
    app()
