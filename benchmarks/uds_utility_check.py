"""Does the UDS utility measure the data or the noise draw? (issue 16; docs/benchmarks/uds.md)

Streams ``--batches`` candidate batches of ``--candidates`` rows of the experiment's SFT data (math 70% /
code 30%, train split, length-bucketed and trimmed like the trainer's), noises each once with LLaDA's
forward process (the training noise), and scores it with ``uds_legacy`` (each row on its own training
noise, raw nuclear norm, top-k) and ``uds`` (one shared mask ratio, nuclear norm per masked token, greedy),
through ``Trainer.candidates`` and ``UDSSelector.select`` as in training, keeping ``--keep`` rows. Per
batch and selector:

- ``corr_utility_masked``: Pearson correlation over the candidates of the utility and the number of
  masked positions of the scoring forward (legacy: 0.91-0.99 in the issue);
- ``corr_utility_answer_len``: the same against the answer length (response + end-of-text padding);
- ``retest``: correlation of the utility with the utility under a second, independent noise draw of the
  same rows (legacy: another LLaDA draw; uds: the next step's shared draw): near 0 when the utility
  measures the draw, near 1 when it measures the row;
- ``train_mask_ratio``: mean masked share of the answer in the *training* noise, selected rows vs all
  (legacy trains on the noise it selected by; uds on noise drawn independently of the selection);
- ``score_mask_ratio``: the same for the scoring noise;
- ``diversity_share``: std of ``alpha * diversity`` over std of the utility (how much diversity moves the
  ranking); ``overlap_with_utility_topk``: share of the kept rows that are also the top ``keep`` by
  utility alone.

Writes ``--out`` (JSON) and prints a table. CPU, the shipped testbed model by default:

    OMP_NUM_THREADS=1 python benchmarks/uds_utility_check.py --out docs/benchmarks/uds_utility_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

MODES = ("uds_legacy", "uds")


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation (0 if either is constant)."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else 0.0


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--model", default=None, help="model folder (default: the embedded testbed model)")
    ap.add_argument("--batches", type=int, default=6, help="candidate batches")
    ap.add_argument("--candidates", type=int, default=256, help="rows per candidate batch (batch 64 at 25%%)")
    ap.add_argument("--keep", type=int, default=64, help="rows kept per candidate batch")
    ap.add_argument("--pool", type=int, default=4000, help="SFT rows generated (the batches are drawn from them)")
    ap.add_argument("--mix", default="math=0.7,code=0.3")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--ratio", type=float, default=0.5, help="uds: mask ratio of the shared scoring noise")
    ap.add_argument("--corpus-seed", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tokenizers import Tokenizer as HFTokenizer

    from unmask.api import embedded_model_path
    from unmask.models.loading import load_model
    from unmask.train.data import encode_sft, length_bucketed_batches, trim_batch
    from unmask.train.objective import forward_process
    from unmask.train.pipeline import generate_corpus
    from unmask.train.selection import make_selector
    from unmask.train.trainer import TrainConfig, Trainer

    t0 = time.perf_counter()
    folder = Path(args.model) if args.model else embedded_model_path()
    mix = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}
    counts = {k: int(round(args.pool * share / sum(mix.values()))) for k, share in mix.items()}
    examples = generate_corpus(counts, "train", args.corpus_seed, workers=1)
    data = encode_sft(examples, HFTokenizer.from_file(str(folder / "tokenizer.json")), args.seq_len)
    model = load_model(folder, device=args.device, dtype=torch.float32)
    V, mask_id = model.config.vocab_size, model.config.mask_token_id
    cfg = TrainConfig(batch_size=args.keep, device=args.device, progress=False, quiet=True)
    trainers = {}
    for mode in MODES:
        options = {"ratio": args.ratio} if mode == "uds" else {}
        selector = make_selector(mode, vocab_size=V, max_len=data.seq_len, seed=args.seed, **options)
        trainers[mode] = Trainer(model, data, cfg, mask_id, selector=selector)
    device = trainers["uds"].device

    gen = torch.Generator().manual_seed(args.seed)
    batches = length_bucketed_batches(data.length, args.candidates, gen)[: args.batches]
    noise_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    records = []
    for bi, idx in enumerate(batches):
        ids = trim_batch(data.input_ids[idx], data.length[idx]).to(device, torch.long)
        plen = data.prompt_len[idx].to(device, torch.long)
        answer_len = (ids.shape[1] - plen).clamp(min=1).float()
        noisy, masked, p_mask = forward_process(ids, plen, mask_id, generator=noise_gen)
        train_ratio = masked.sum(1).float() / answer_len
        rec = {
            "batch": bi,
            "rows": ids.shape[0],
            "width": ids.shape[1],
            "answer_len_mean": float(answer_len.mean()),
            "answer_len_std": float(answer_len.std()),
        }
        for mode in MODES:
            trainer = trainers[mode]
            sel = trainer.selector
            cand = trainer.candidates(ids, plen, noisy, masked, p_mask)
            keep = sel.select(cand, args.keep)
            scores = sel.last_scores
            utility, diversity = scores["utility"], scores["diversity"]
            n_masked = cand.masked.sum(1).float()
            # a second, independent draw of the scoring noise for the same rows
            if mode == "uds":
                retest_cand = trainer.candidates(ids, plen, noisy, masked, p_mask)  # the next shared draw
            else:
                noisy2, masked2, p2 = forward_process(ids, plen, mask_id, generator=noise_gen)
                retest_cand = trainer.candidates(ids, plen, noisy2, masked2, p2)
            retest_utility = sel.scores(retest_cand)[0]
            top_utility = set(torch.topk(utility, args.keep).indices.tolist())
            score_ratio = n_masked / answer_len
            div_std = float((sel.alpha * diversity).std())
            rec[mode] = {
                "corr_utility_masked": corr(utility, n_masked),
                "corr_utility_answer_len": corr(utility, answer_len),
                "retest": corr(utility, retest_utility),
                "train_mask_ratio": {"selected": float(train_ratio[keep].mean()), "all": float(train_ratio.mean())},
                "score_mask_ratio": {"selected": float(score_ratio[keep].mean()), "all": float(score_ratio.mean())},
                "diversity_share": div_std / max(float(utility.std()), 1e-30),
                "overlap_with_utility_topk": len(top_utility & set(keep.tolist())) / args.keep,
            }
        records.append(rec)
        print(
            f"batch {bi} ({ids.shape[0]} x {ids.shape[1]}, answers {rec['answer_len_mean']:.0f} tokens): "
            + "  ".join(
                f"{m}: corr(u, masked) {rec[m]['corr_utility_masked']:+.3f} retest {rec[m]['retest']:+.3f} "
                f"train mask ratio sel/all {rec[m]['train_mask_ratio']['selected']:.3f}/"
                f"{rec[m]['train_mask_ratio']['all']:.3f}"
                for m in MODES
            )
            + f"  [{time.perf_counter() - t0:.0f}s]",
            flush=True,
        )

    def summary(mode: str, key: str, sub: str | None = None) -> dict:
        vals = [r[mode][key] if sub is None else r[mode][key][sub] for r in records]
        return {
            "mean": statistics.mean(vals),
            "min": min(vals),
            "max": max(vals),
            "mean_abs": statistics.mean(abs(v) for v in vals),
        }

    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "model": str(folder),
        "host": {
            "machine": platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": str(device),
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": {
            mode: {
                "corr_utility_masked": summary(mode, "corr_utility_masked"),
                "corr_utility_answer_len": summary(mode, "corr_utility_answer_len"),
                "retest": summary(mode, "retest"),
                "train_mask_ratio_selected": summary(mode, "train_mask_ratio", "selected"),
                "train_mask_ratio_all": summary(mode, "train_mask_ratio", "all"),
                "score_mask_ratio_selected": summary(mode, "score_mask_ratio", "selected"),
                "score_mask_ratio_all": summary(mode, "score_mask_ratio", "all"),
                "diversity_share": summary(mode, "diversity_share"),
                "overlap_with_utility_topk": summary(mode, "overlap_with_utility_topk"),
            }
            for mode in MODES
        },
        "batches": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"\n{len(records)} batches of {args.candidates} candidates, keep {args.keep}, "
        f"{result['seconds']:.0f}s -> {args.out}"
    )
    print(
        "| selector | corr(utility, masked count) mean [min, max] | retest corr | train mask ratio selected / all "
        "| scoring mask ratio selected / all |"
    )
    print("|---|---|---:|---|---|")
    for mode in MODES:
        s = result["summary"][mode]
        c = s["corr_utility_masked"]
        print(
            f"| {mode} | {c['mean']:+.2f} [{c['min']:+.2f}, {c['max']:+.2f}] | {s['retest']['mean']:+.2f} | "
            f"{s['train_mask_ratio_selected']['mean']:.3f} / {s['train_mask_ratio_all']['mean']:.3f} | "
            f"{s['score_mask_ratio_selected']['mean']:.3f} / {s['score_mask_ratio_all']['mean']:.3f} |"
        )
    return result


if __name__ == "__main__":
    main()
