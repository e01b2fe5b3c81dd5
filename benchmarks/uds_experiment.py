"""UDS vs uniform vs big-loss online batch selection on the testbed SFT data (issue: UDS).

Protocol (the UDS paper's online setting): a pool of ``--pool`` SFT rows (math + code, train split)
is streamed once in candidate batches of ``batch / budget`` rows; from each, the selector keeps
``batch`` rows and the optimiser step trains on them. So at a budget every selector trains on the
same number of rows with the same number of steps (same compute for the backward passes); UDS and
big-loss also pay a no-grad scoring forward over every candidate, which is reported as wall-clock.

Each run starts from the same model (``--init``: by default the embedded testbed model, so this is
continued SFT on fresh rows of its task distribution; ``scratch``: a fresh model of ``--shape``), then
is scored on held-out data: masked-diffusion validation loss, and
exact accuracy (math) / pass@1 (code) on the test splits with the LLaDA baseline decoder (topk, one
token per step, block 32).

Runs go to worker processes (``--workers`` at a time, all on one GPU). Writes ``--out``:
``runs/*.json`` (one per run), ``results.json``, ``results.md``, ``uds.png``.

    python benchmarks/uds_experiment.py --out runs/uds --pool 200000 --seeds 0 1 2 --workers 6
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
    ap.add_argument("--selectors", nargs="+", default=["uds", "random", "high_loss"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch", type=int, default=64, help="rows trained per step")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--init", default=str(ASSETS),
                    help="checkpoint folder to fine-tune (default: the embedded testbed model); 'scratch': a fresh "
                    "model of --shape")
    ap.add_argument("--tokenizer", type=Path, default=ASSETS, help="folder with tokenizer.json (default: embedded)")
    ap.add_argument("--eval-math", type=int, default=128)
    ap.add_argument("--eval-code", type=int, default=64)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--val-rows", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=4, help="runs in parallel (processes)")
    ap.add_argument("--nuclear", default="auto", choices=["auto", "gram", "svd"])
    ap.add_argument("--corpus-seed", type=int, default=7)
    ap.add_argument("--deadline-s", type=float, default=0,
                    help="stop unfinished runs after this many seconds and report the finished ones (0: none)")
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
    val_ex = generate_corpus({k: max(1, int(args.val_rows * s)) for k, s in mix.items()}, "validation",
                             args.corpus_seed, workers=1)
    tok = HFTokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    train = encode_sft(train_ex, tok, args.seq_len)
    val = encode_sft(val_ex, tok, args.seq_len)
    path = args.out / "data.pt"
    torch.save({"train": vars(train), "val": vars(val)}, path)
    print(f"data: {len(train)} pool rows ({counts}), {len(val)} validation rows, "
          f"mean length {float(train.length.float().mean()):.0f}, in {time.perf_counter() - t0:.0f}s", flush=True)
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
    config = LLaDAConfig(**SHAPES[args.shape], **fields, rope_theta=10000.0, rms_norm_eps=1e-5,
                         max_sequence_length=max(args.seq_len, 512), weight_tying=False)
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
    cfg = TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, warmup_steps=max(1, steps // 20),
                      min_lr_ratio=0.1, eval_every=0, eval_rows=args.val_rows, log_every=max(1, steps // 20),
                      selection_fraction=budget, selector=selector_name, seed=seed, progress=False)
    extra = {"nuclear": nuclear} if selector_name == "uds" else {}
    selector = make_selector(selector_name, vocab_size=model.config.vocab_size, max_len=train.seq_len, seed=seed,
                             **extra)
    trainer = Trainer(model, train, cfg, model.config.mask_token_id, val_data=val, selector=selector)
    t0 = time.perf_counter()
    log = trainer.fit()
    train_s = time.perf_counter() - t0
    phases = [r for r in log.train if "train_ms" in r]
    timing = {k: statistics.mean(r[k] for r in phases) for k in ("score_forward_ms", "select_ms", "train_ms")
              if phases and k in phases[0]}

    lm = DiffusionLM(trainer.model.eval(), Tokenizer.from_pretrained(args.tokenizer))
    scores = {}
    for task_name, n in (("math", args.eval_math), ("code", args.eval_code)):
        task = get_task(task_name)
        examples = task.examples("test", n, 0)
        hits = []
        for s in range(0, len(examples), 64):
            chunk = examples[s:s + 64]
            with torch.no_grad():
                out = lm.generate([e.prompt for e in chunk], policy="topk", gen_length=args.gen_length,
                                  block_length=32, early_stop=True)
            hits += score_all(task, chunk, out.texts)
        scores[task_name] = sum(hits) / len(hits)
    val_stats = log.val[-1] if log.val else {}
    return {
        "selector": selector_name, "budget": budget, "seed": seed, "steps": steps, "rows_trained": steps * args.batch,
        "candidate_rows": candidates, "train_seconds": round(train_s, 1), "phase_ms": timing,
        "val_loss": val_stats.get("loss"), "val_masked_acc": val_stats.get("masked_acc"),
        "math_acc": scores["math"], "code_pass": scores["code"],
        "loss_curve": [(r["step"], r["loss"]) for r in log.train],
    }


def worker(args, data_path: Path, queue, results_dir: Path, nuclear: str) -> None:
    while True:
        job = queue.get()
        if job is None:
            return
        name = f"{job[0]}-b{job[1]:g}-s{job[2]}"
        try:
            result = run_one(args, data_path, *job, nuclear=nuclear)
            (results_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(f"[{name}] math {result['math_acc']:.3f} code {result['code_pass']:.3f} "
                  f"val {result['val_loss']:.4f} {result['train_seconds']}s {result['phase_ms']}", flush=True)
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


def summarise(args, results: list[dict], nuclear_info: dict) -> None:
    rows = []
    for budget in args.budgets:
        for sel in args.selectors:
            runs = [r for r in results if r["selector"] == sel and r["budget"] == budget]
            if not runs:
                continue

            def stat(key, runs=runs):
                vals = [r[key] for r in runs if r[key] is not None]
                if not vals:
                    return None, None
                return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

            phase = {k: statistics.mean(r["phase_ms"].get(k, 0.0) for r in runs) for k in
                     ("score_forward_ms", "select_ms", "train_ms")}
            rows.append({"budget": budget, "selector": sel, "seeds": len(runs), "steps": runs[0]["steps"],
                         "rows_trained": runs[0]["rows_trained"], "math": stat("math_acc"), "code": stat("code_pass"),
                         "val_loss": stat("val_loss"), "train_seconds": stat("train_seconds"), "phase_ms": phase})
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "nuclear": nuclear_info, "rows": rows,
                                                       "runs": results}, indent=1))
    lines = ["| budget | selector | seeds | steps x rows | math acc | code pass@1 | val loss | wall s | "
             "score fwd ms | select ms | train step ms |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        def pm(v, digits=3):
            return "-" if v[0] is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"
        p = r["phase_ms"]
        lines.append(f"| {r['budget']:.0%} | {r['selector']} | {r['seeds']} | {r['steps']} x {args.batch} | "
                     f"{pm(r['math'])} | {pm(r['code'])} | {pm(r['val_loss'], 4)} | {pm(r['train_seconds'], 0)} | "
                     f"{p['score_forward_ms']:.1f} | {p['select_ms']:.1f} | {p['train_ms']:.1f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    plot(args, rows)


def plot(args, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("math", "math exact accuracy"), ("code", "code pass@1"), ("val_loss", "validation loss")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(15, 4.2))
    width = 0.8 / max(1, len(args.selectors))
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for i, sel in enumerate(args.selectors):
            xs, ys, es = [], [], []
            for j, budget in enumerate(args.budgets):
                r = next((r for r in rows if r["selector"] == sel and r["budget"] == budget), None)
                if r and r[key][0] is not None:
                    xs.append(j + (i - (len(args.selectors) - 1) / 2) * width)
                    ys.append(r[key][0])
                    es.append(r[key][1])
            ax.bar(xs, ys, width, yerr=es, capsize=3, label=sel)
        ax.set_xticks(range(len(args.budgets)), [f"{b:.0%} budget" for b in args.budgets])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"online batch selection, {args.pool} candidate rows streamed once, batch {args.batch} "
                 f"(mean ± std over {len(args.seeds)} seeds)")
    fig.tight_layout()
    fig.savefig(args.out / "uds.png", dpi=120)


def main(argv=None) -> None:
    args = parse_args(argv)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    data_path = build_data(args)
    nuclear, nuclear_info = pick_nuclear(args, data_path)
    jobs = [(sel, b, s) for s in args.seeds for b in args.budgets for sel in args.selectors]
    # seed by seed (a deadline leaves whole seeds), the slow selectors first within a seed
    jobs.sort(key=lambda j: (args.seeds.index(j[2]), j[0] == "random", -j[1]))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for job in jobs:
        queue.put(job)
    for _ in range(args.workers):
        queue.put(None)
    t0 = time.perf_counter()
    procs = [ctx.Process(target=worker, args=(args, data_path, queue, args.out / "runs", nuclear))
             for _ in range(args.workers)]
    for p in procs:
        p.start()
    deadline = t0 + args.deadline_s if args.deadline_s else None
    for p in procs:
        p.join(None if deadline is None else max(0.0, deadline - time.perf_counter()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            print("deadline reached: unfinished runs stopped", flush=True)
    results = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*.json"))]
    print(f"{len(results)} of {len(jobs)} runs finished in {time.perf_counter() - t0:.0f}s on {args.workers} workers",
          flush=True)
    summarise(args, results, nuclear_info)
    os.remove(data_path)


if __name__ == "__main__":
    main()
