"""UDS vs uniform vs big-loss online batch selection on the testbed SFT data (issues: UDS, 16).

Protocol (the UDS paper's online setting): a pool of ``--pool`` SFT rows (math + code, train split)
is streamed once in candidate batches of ``batch / budget`` rows; from each, the selector keeps
``batch`` rows and the optimiser step trains on them. So at a budget every selector trains on the
same number of rows with the same number of steps (same compute for the backward passes); UDS and
big-loss also pay a no-grad scoring forward over every candidate, which is reported per step
(``score_forward_ms`` + ``select_ms``). A seed fixes the model's noise and the candidate batches, which
are the same for every selector at that seed and budget: differences to ``random`` are paired by seed.

Selectors (``--selectors``): ``random`` (uniform), ``high_loss`` (big-loss), ``uds_legacy`` (the first UDS
port: each row scored on its own noise draw, top-k) and ``uds`` (one shared scoring mask ratio, utility
per masked token, greedy picks; ``train/selection.py``).

Each run starts from the same model (``--init``: by default the embedded testbed model, so this is
continued SFT on fresh rows of its task distribution; ``scratch``: a fresh model of ``--shape``), then
is scored on held-out data: masked-diffusion validation loss, and
exact accuracy (math) / pass@1 (code) on the test splits with the LLaDA baseline decoder (topk, one
token per step, block 32).

Runs go to worker processes (``--workers`` at a time, all on one GPU). Writes ``--out``:
``runs/*.json`` (one per run), ``results.json``, ``results.md`` (mean ± 95% t-interval over seeds),
``uds.png``; the three are rewritten after every finished run, so a deadline (``--deadline-s``, counted
from the start of the script) or a killed command leaves the results so far.

    python benchmarks/uds_experiment.py --out runs/uds --pool 40000 --seeds 0 1 2 --workers 8 --deadline-s 460
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unmask.train.data import TokenData, encode_sft  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "src" / "unmask" / "assets" / "testbed"
SHAPES = {  # LLaDA-architecture shapes for runs from scratch
    "small": dict(d_model=256, n_heads=4, n_kv_heads=4, n_layers=6, mlp_hidden_size=640),
    "testbed": dict(d_model=384, n_heads=8, n_kv_heads=8, n_layers=8, mlp_hidden_size=896),
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pool", type=int, default=200_000, help="candidate rows streamed once")
    ap.add_argument("--mix", default="math=0.7,code=0.3", help="task shares of the pool")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.25])
    ap.add_argument(
        "--selectors",
        nargs="+",
        default=["random", "high_loss", "uds_legacy", "uds"],
        choices=["random", "high_loss", "uds_legacy", "uds"],
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch", type=int, default=64, help="rows trained per step")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument(
        "--init",
        default=str(ASSETS),
        help="checkpoint folder to fine-tune (default: the embedded testbed model); 'scratch': a fresh "
        "model of --shape",
    )
    ap.add_argument("--tokenizer", type=Path, default=ASSETS, help="folder with tokenizer.json (default: embedded)")
    ap.add_argument("--eval-math", type=int, default=128)
    ap.add_argument("--eval-code", type=int, default=64)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--val-rows", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=4, help="runs in parallel (processes)")
    ap.add_argument("--nuclear", default="auto", choices=["auto", "gram", "newton_schulz", "svd"])
    ap.add_argument("--uds-ratio", type=float, default=0.5, help="uds: mask ratio of the shared scoring noise")
    ap.add_argument("--corpus-seed", type=int, default=7)
    ap.add_argument(
        "--deadline-s",
        type=float,
        default=0,
        help="seconds from the start of the script after which unfinished runs are stopped and the "
        "finished ones reported (0: none)",
    )
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- data


def build_data(args) -> Path:
    """Generate and encode the pool and validation rows once; returns the .pt file the workers read."""
    from tokenizers import Tokenizer as HFTokenizer

    from unmask.train.pipeline import generate_corpus

    mix = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}
    counts = {k: int(round(args.pool * share / sum(mix.values()))) for k, share in mix.items()}
    t0 = time.perf_counter()
    train_ex = generate_corpus(counts, "train", args.corpus_seed, workers=0)
    val_ex = generate_corpus(
        {k: max(1, int(args.val_rows * s)) for k, s in mix.items()}, "validation", args.corpus_seed, workers=1
    )
    tok = HFTokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    train = encode_sft(train_ex, tok, args.seq_len)
    val = encode_sft(val_ex, tok, args.seq_len)
    path = args.out / "data.pt"
    torch.save({"train": vars(train), "val": vars(val)}, path)
    print(
        f"data: {len(train)} pool rows ({counts}), {len(val)} validation rows, "
        f"mean length {float(train.length.float().mean()):.0f}, in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    return path


def load_data(path: Path) -> tuple[TokenData, TokenData]:
    blob = torch.load(path, weights_only=False)
    return TokenData(**blob["train"]), TokenData(**blob["val"])


# ----------------------------------------------------------------------------- one run


def base_model(args):
    from unmask.models.config import LLaDAConfig
    from unmask.models.llada import LLaDAModel
    from unmask.models.loading import load_model
    from unmask.train.trainer import init_weights

    if args.init != "scratch":
        return load_model(args.init, device="cpu", dtype=torch.float32)
    ref = json.loads((args.tokenizer / "config.json").read_text()) if (args.tokenizer / "config.json").is_file() else {}
    fields = {k: ref[k] for k in ("vocab_size", "embedding_size", "mask_token_id", "eos_token_id", "pad_token_id")}
    config = LLaDAConfig(
        **SHAPES[args.shape],
        **fields,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        max_sequence_length=max(args.seq_len, 512),
        weight_tying=False,
    )
    return init_weights(LLaDAModel(config), seed=1000)  # the same start for every run


def run_one(args, data_path: Path, selector_name: str, budget: float, seed: int, nuclear: str) -> dict:
    from unmask.api import DiffusionLM
    from unmask.eval.runner import score_all
    from unmask.models.tokenizer import Tokenizer
    from unmask.tasks.registry import get_task
    from unmask.train.selection import make_selector
    from unmask.train.trainer import TrainConfig, Trainer

    torch.manual_seed(seed)
    train, val = load_data(data_path)
    model = base_model(args)
    candidates = round(args.batch / budget)
    steps = len(train) // candidates  # one pass over the pool
    cfg = TrainConfig(
        steps=steps,
        batch_size=args.batch,
        lr=args.lr,
        warmup_steps=max(1, steps // 20),
        min_lr_ratio=0.1,
        eval_every=0,
        eval_rows=args.val_rows,
        log_every=max(1, steps // 20),
        selection_fraction=budget,
        selector=selector_name,
        seed=seed,
        progress=False,
    )
    extra = {}
    if selector_name in ("uds", "uds_legacy"):
        extra["nuclear"] = nuclear
    if selector_name == "uds":
        extra["ratio"] = args.uds_ratio
    selector = make_selector(
        selector_name, vocab_size=model.config.vocab_size, max_len=train.seq_len, seed=seed, **extra
    )
    trainer = Trainer(model, train, cfg, model.config.mask_token_id, val_data=val, selector=selector)
    t0 = time.perf_counter()
    log = trainer.fit()
    train_s = time.perf_counter() - t0
    phases = [r for r in log.train if "train_ms" in r]
    timing = {
        k: statistics.mean(r[k] for r in phases)
        for k in ("score_forward_ms", "select_ms", "train_ms")
        if phases and k in phases[0]
    }

    lm = DiffusionLM(trainer.model.eval(), Tokenizer.from_pretrained(args.tokenizer))
    scores = {}
    for task_name, n in (("math", args.eval_math), ("code", args.eval_code)):
        task = get_task(task_name)
        examples = task.examples("test", n, 0)
        hits = []
        for s in range(0, len(examples), 64):
            chunk = examples[s : s + 64]
            with torch.no_grad():
                out = lm.generate(
                    [e.prompt for e in chunk],
                    policy="topk",
                    gen_length=args.gen_length,
                    block_length=32,
                    early_stop=True,
                )
            hits += score_all(task, chunk, out.texts)
        scores[task_name] = sum(hits) / len(hits)
    val_stats = log.val[-1] if log.val else {}
    return {
        "selector": selector_name,
        "budget": budget,
        "seed": seed,
        "steps": steps,
        "rows_trained": steps * args.batch,
        "candidate_rows": candidates,
        "train_seconds": round(train_s, 1),
        "phase_ms": timing,
        "val_loss": val_stats.get("loss"),
        "val_masked_acc": val_stats.get("masked_acc"),
        "math_acc": scores["math"],
        "code_pass": scores["code"],
        "loss_curve": [(r["step"], r["loss"]) for r in log.train],
    }


def worker(args, data_path: Path, queue, results_dir: Path, nuclear: str) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, args.workers)))
    while True:
        job = queue.get()
        if job is None:
            return
        name = f"{job[0]}-b{job[1]:g}-s{job[2]}"
        try:
            result = run_one(args, data_path, *job, nuclear=nuclear)
            tmp = results_dir / f".{name}.json.tmp"  # renamed when complete: the main process never reads half
            tmp.write_text(json.dumps(result, indent=1))
            tmp.rename(results_dir / f"{name}.json")
            print(
                f"[{name}] math {result['math_acc']:.3f} code {result['code_pass']:.3f} "
                f"val {result['val_loss']:.4f} {result['train_seconds']}s {result['phase_ms']}",
                flush=True,
            )
        except Exception:  # keep the other runs going; the failure is in the log
            print(f"[{name}] FAILED\n{traceback.format_exc()}", flush=True)


# ----------------------------------------------------------------------------- the nuclear-norm method


def pick_nuclear(args, data_path: Path) -> tuple[str, dict]:
    """Time the nuclear-norm methods on a candidate batch of the logits' shape; the fastest one that
    agrees with float64 ``gram`` (relative 1e-3 on every row) wins."""
    from unmask.train.selection import NUCLEAR_METHODS, nuclear_norms

    if args.nuclear != "auto" or not torch.cuda.is_available():
        return ("gram" if args.nuclear == "auto" else args.nuclear), {}
    train, _ = load_data(data_path)
    B = round(args.batch / min(args.budgets))
    L = int(train.length.float().mean()) + 1
    V = json.loads((Path(args.init if args.init != "scratch" else args.tokenizer) / "config.json").read_text())
    V = V["vocab_size"]
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(B, L, V, device="cuda", generator=gen) * 3 + torch.randn(B, 1, V, device="cuda", generator=gen)
    x = x * (torch.rand(B, L, 1, device="cuda", generator=gen) < torch.rand(B, 1, 1, device="cuda", generator=gen))
    out: dict = {"shape": [B, L, V]}
    reference = None
    for method in NUCLEAR_METHODS:  # "gram" first: the reference
        try:
            nuclear_norms(x[:4], method)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            values = nuclear_norms(x, method)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1e3
        except Exception as err:  # a driver may be missing on this build
            out[method] = {"error": str(err)[:200]}
            continue
        reference = values if reference is None else reference
        rel = float(((values - reference).abs() / reference.abs().clamp(min=1e-6)).max())
        out[method] = {"ms": round(ms, 2), "max_rel_diff_vs_gram": rel}
    ok = [m for m in NUCLEAR_METHODS if "ms" in out.get(m, {}) and out[m]["max_rel_diff_vs_gram"] < 1e-3]
    best = min(ok, key=lambda m: out[m]["ms"])
    print(f"nuclear norm on {B}x{L}x{V}: {out} -> {best}", flush=True)
    return best, out


# ----------------------------------------------------------------------------- report

T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]
METRICS = ("val_loss", "math_acc", "code_pass")
PHASES = ("score_forward_ms", "select_ms", "train_ms")


def mean_ci(values: list[float]) -> dict | None:
    """Mean and the half-width of its 95% Student-t interval over seeds: ``t_{0.975, n-1} * s / sqrt(n)``
    (``None`` for no values, half-width ``None`` for one)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    n = len(values)
    if n == 1:
        return {"mean": values[0], "ci95": None, "n": 1}
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    return {"mean": statistics.mean(values), "ci95": t * statistics.stdev(values) / n**0.5, "n": n}


def summarise(args, results: list[dict], nuclear_info: dict, status: dict) -> list[dict]:
    """Per budget and selector: mean ± 95% CI of each metric over seeds, the paired difference to
    ``random`` (same seed, same candidate batches), and the per-step phases; writes results.json/.md."""
    rows = []
    for budget in args.budgets:
        base = {r["seed"]: r for r in results if r["selector"] == "random" and r["budget"] == budget}
        for sel in args.selectors:
            runs = sorted(
                (r for r in results if r["selector"] == sel and r["budget"] == budget), key=lambda r: r["seed"]
            )
            if not runs:
                continue
            row = {
                "budget": budget,
                "selector": sel,
                "seeds": [r["seed"] for r in runs],
                "steps": runs[0]["steps"],
                "rows_trained": runs[0]["rows_trained"],
                "train_seconds": mean_ci([r["train_seconds"] for r in runs]),
            }
            for key in METRICS:
                row[key] = mean_ci([r[key] for r in runs])
                paired = [
                    r[key] - base[r["seed"]][key]
                    for r in runs
                    if sel != "random" and r["seed"] in base and r[key] is not None and base[r["seed"]][key] is not None
                ]
                row[f"{key}_vs_random"] = mean_ci(paired)
            row["phase_ms"] = {k: statistics.mean(r["phase_ms"].get(k, 0.0) for r in runs) for k in PHASES}
            row["selection_ms_per_step"] = row["phase_ms"]["score_forward_ms"] + row["phase_ms"]["select_ms"]
            rows.append(row)
    blob = {
        "status": status,
        "args": {k: str(v) for k, v in vars(args).items()},
        "nuclear": nuclear_info,
        "rows": rows,
        "runs": results,
    }
    tmp = args.out / ".results.json.tmp"
    tmp.write_text(json.dumps(blob, indent=1))
    tmp.rename(args.out / "results.json")

    def pm(v, digits=4):
        if v is None:
            return "-"
        return f"{v['mean']:.{digits}f}" + ("" if v["ci95"] is None else f" ± {v['ci95']:.{digits}f}")

    lines = [
        f"{status['finished']} of {status['planned']} runs"
        + ("" if status["complete"] else " (partial)")
        + "; mean ± 95% t-interval over seeds; vs random: paired by seed (same candidate batches)",
        "",
        "| budget | selector | seeds | steps x rows | val loss | val loss vs random | math acc | math vs random "
        "| code pass@1 | code vs random | selection ms/step (score fwd + select) | train step ms | wall s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p = r["phase_ms"]
        lines.append(
            f"| {r['budget']:.0%} | {r['selector']} | {len(r['seeds'])} | {r['steps']} x {args.batch} | "
            f"{pm(r['val_loss'])} | {pm(r['val_loss_vs_random'])} | {pm(r['math_acc'], 3)} | "
            f"{pm(r['math_acc_vs_random'], 3)} | {pm(r['code_pass'], 3)} | {pm(r['code_pass_vs_random'], 3)} | "
            f"{r['selection_ms_per_step']:.1f} ({p['score_forward_ms']:.1f} + {p['select_ms']:.1f}) | "
            f"{p['train_ms']:.1f} | {pm(r['train_seconds'], 0)} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    return rows


def plot(args, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("val_loss", "validation loss"), ("math_acc", "math exact accuracy"), ("code_pass", "code pass@1")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(15, 4.2))
    width = 0.8 / max(1, len(args.selectors))
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for i, sel in enumerate(args.selectors):
            xs, ys, es = [], [], []
            for j, budget in enumerate(args.budgets):
                r = next((r for r in rows if r["selector"] == sel and r["budget"] == budget), None)
                if r and r[key] is not None:
                    xs.append(j + (i - (len(args.selectors) - 1) / 2) * width)
                    ys.append(r[key]["mean"])
                    es.append(r[key]["ci95"] or 0.0)
            ax.bar(xs, ys, width, yerr=es, capsize=3, label=sel)
        ax.set_xticks(range(len(args.budgets)), [f"{b:.0%} budget" for b in args.budgets])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(
        f"online batch selection, {args.pool} candidate rows streamed once, batch {args.batch} "
        f"(mean ± 95% t-interval over seeds {', '.join(map(str, args.seeds))})"
    )
    fig.tight_layout()
    fig.savefig(args.out / "uds.png", dpi=120)
    plt.close(fig)


def report(args, jobs: list, nuclear_info: dict, t_start: float, final: bool) -> list[dict]:
    results = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*.json"))]
    status = {
        "finished": len(results),
        "planned": len(jobs),
        "complete": len(results) == len(jobs),
        "final": final,
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    rows = summarise(args, results, nuclear_info, status)
    try:
        plot(args, rows)
    except Exception as err:  # a missing matplotlib must not lose the numbers
        print(f"plot failed: {err}", flush=True)
    return rows


def main(argv=None) -> None:
    t_start = time.perf_counter()
    args = parse_args(argv)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    data_path = build_data(args)
    try:
        nuclear, nuclear_info = pick_nuclear(args, data_path)
        run_all(args, data_path, nuclear, nuclear_info, t_start)
    finally:
        data_path.unlink(missing_ok=True)


def run_all(args, data_path: Path, nuclear: str, nuclear_info: dict, t_start: float) -> None:
    jobs = [(sel, b, s) for s in args.seeds for b in args.budgets for sel in args.selectors]
    # seed by seed (a deadline leaves whole seeds), the slow selectors first within a seed
    jobs.sort(key=lambda j: (args.seeds.index(j[2]), j[0] == "random", -j[1]))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for job in jobs:
        queue.put(job)
    for _ in range(args.workers):
        queue.put(None)
    procs = [
        ctx.Process(target=worker, args=(args, data_path, queue, args.out / "runs", nuclear))
        for _ in range(args.workers)
    ]
    for p in procs:
        p.start()
    deadline = t_start + args.deadline_s if args.deadline_s else None
    seen = 0
    while any(p.is_alive() for p in procs):
        if deadline is not None and time.perf_counter() >= deadline:
            print("deadline reached: unfinished runs stopped", flush=True)
            queue.cancel_join_thread()  # jobs left in the queue must not block the exit
            for p in procs:
                if p.is_alive():
                    p.terminate()
            break
        time.sleep(2.0)
        done = len(list((args.out / "runs").glob("*.json")))
        if done != seen:  # partial results after every finished run
            seen = done
            report(args, jobs, nuclear_info, t_start, final=False)
    for p in procs:
        p.join(10)
    rows = report(args, jobs, nuclear_info, t_start, final=True)
    print(
        f"{len(list((args.out / 'runs').glob('*.json')))} of {len(jobs)} runs finished in "
        f"{time.perf_counter() - t_start:.0f}s on {args.workers} workers ({len(rows)} cells)",
        flush=True,
    )
    print((args.out / "results.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
