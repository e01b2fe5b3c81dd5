"""End to end: task corpus -> BPE tokenizer -> tensors -> masked-diffusion training -> loadable folder.

Output folder ``out``::

    out/model/            config.json, tokenizer.json, tokenizer_config.json, safetensors (+ index)
    out/train_log.json    losses, validation, data statistics, the preset
    out/loss.png          the loss curve
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from unmask.models.tokenizer import (
    load_tokenizer,
    padded_embedding_size,
    special_ids,
    tokenizer_files,
    train_tokenizer,
)
from unmask.train.data import TokenData, encode_pretrain, encode_sft
from unmask.train.plots import plot_losses
from unmask.train.presets import Preset
from unmask.train.selection import make_selector
from unmask.train.trainer import TrainConfig, Trainer, init_weights, param_count

MODEL_DIR = "model"
LOG_FILE = "train_log.json"
PLOT_FILE = "loss.png"
CHUNK = 4000  # examples per generation job


def _sft_chunk(task: str, n: int, split: str, seed: int, varied: bool | float = False) -> list:
    from unmask.tasks.corpus import sft_corpus

    return sft_corpus({task: n}, split=split, seed=seed, varied=varied)


def generate_corpus(
    n_per_task: dict[str, int], split: str = "train", seed: int = 0, workers: int = 0, varied: bool | float = False
) -> list:
    """``sft_corpus`` in parallel: each task's count is cut into jobs of ``CHUNK`` examples with their
    own seeds (``seed * 1_000_003 + job``), run on ``workers`` processes (0: all cores). ``varied``:
    targets in a style drawn per row (``sft_corpus(varied=True)``), or for that share of the rows.

    Jobs are distinct within a job but may repeat examples across jobs; the split is still respected
    (``unmask.tasks`` assigns splits by hashing each example's key).
    """
    jobs = []
    for task, n in n_per_task.items():
        for j, start in enumerate(range(0, n, CHUNK)):
            jobs.append((task, min(CHUNK, n - start), split, seed * 1_000_003 + j, varied))
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) == 1:
        parts = [_sft_chunk(*job) for job in jobs]
    else:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            parts = list(pool.map(_sft_chunk, *zip(*jobs, strict=True)))
    examples = [ex for part in parts for ex in part]
    random.Random(seed).shuffle(examples)
    return examples


def _pretrain_texts() -> list[str]:
    from unmask.tasks.corpus import pretrain_text

    text = pretrain_text()
    return [text] if isinstance(text, str) else list(text)


def tokenizer_corpus(examples: Sequence, n: int, extra: Sequence[str] = ()) -> list[str]:
    """Texts the BPE merges are learnt on: ``extra`` plus prompts and targets of ``n`` examples."""
    texts = list(extra)
    for ex in examples[:n]:
        texts.append(ex.prompt)
        texts.append(ex.target)
    return texts


def model_config(preset: Preset, tokenizer, seq_len: int):
    from unmask.models.config import LLaDAConfig

    ids = special_ids(tokenizer)
    vocab = tokenizer.get_vocab_size()
    fields = dict(preset.model)
    fields.setdefault("max_sequence_length", max(seq_len, 512))
    return LLaDAConfig(
        **fields,
        vocab_size=vocab,
        embedding_size=padded_embedding_size(vocab),
        mask_token_id=ids["mask"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )


def corpus_sizes(n_per_task: dict[str, int], train: TrainConfig) -> dict[str, int]:
    """The preset's examples per task, scaled down (same mix) when the run cannot read them all: a
    ``--steps 3`` smoke run needs a few hundred rows, not the full corpus."""
    candidate_rows = max(1, round(train.batch_size / train.selection_fraction))
    needed = train.steps * candidate_rows
    total = sum(n_per_task.values())
    if needed >= total:
        return dict(n_per_task)
    return {task: max(1, -(-n * needed // total)) for task, n in n_per_task.items()}


def _stats(data: TokenData) -> dict:
    out: dict = {"rows": len(data), "seq_len": data.seq_len}
    if len(data):
        out.update(
            mean_len=round(float(data.length.float().mean()), 1),
            max_len=int(data.length.max()),
            mean_prompt_len=round(float(data.prompt_len.float().mean()), 1),
        )
    if data.tasks is not None:
        out["per_task"] = dict(Counter(data.tasks))
    return out


def run(preset: Preset, out: str | Path, log=print, init: str | Path | None = None) -> dict:
    """Train ``preset`` and write ``out/model``, ``out/train_log.json`` and ``out/loss.png``; returns the log.

    ``init``: a checkpoint folder (or hub id) to fine-tune: its weights, shape and tokenizer are used
    (the preset's model shape and tokenizer settings are ignored); default: a fresh model.
    """
    from unmask.models.llada import LLaDAModel
    from unmask.models.loading import save_pretrained

    preset.check()  # every setting, before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d, tc = preset.data, preset.train
    torch.manual_seed(tc.seed)

    t0 = time.perf_counter()
    varied = d.varied_share if d.varied else 0.0
    train_ex = generate_corpus(corpus_sizes(d.n_per_task, tc), "train", d.seed, d.workers, varied)
    val_ex = generate_corpus(d.n_val_per_task, "validation", d.seed, 1, varied)
    t_gen = time.perf_counter() - t0
    note = f" ({varied:.0%} varied targets)" if varied else ""
    log(f"corpus: {len(train_ex)} train / {len(val_ex)} validation examples{note} in {t_gen:.1f}s")

    t0 = time.perf_counter()
    extra = _pretrain_texts() if (init is None or d.pretrain) else []
    if init is not None:
        from unmask.models.loading import resolve_model_path

        init_folder = resolve_model_path(init)
        tok = load_tokenizer(init_folder)
    else:
        tok = train_tokenizer(tokenizer_corpus(train_ex, d.tokenizer_examples, extra), d.tokenizer_vocab)
    train = encode_sft(train_ex, tok, d.seq_len)
    val = encode_sft(val_ex, tok, d.seq_len)
    if d.pretrain:
        train = TokenData.concat([train, encode_pretrain(extra, tok, d.seq_len)])
    t_tok = time.perf_counter() - t0
    dropped = len(train_ex) - int((train.prompt_len > 0).sum())
    log(
        f"tokenizer: {tok.get_vocab_size()} tokens; encoded {len(train)} rows ({dropped} longer than "
        f"seq_len={d.seq_len} dropped) in {t_tok:.1f}s; mean length {float(train.length.float().mean()):.0f}"
    )

    if init is not None:
        from unmask.models.loading import load_model

        model = load_model(init_folder, dtype=torch.float32, device="cpu")
        config = model.config
        if int(train.length.max()) > config.max_sequence_length:
            raise ValueError(f"rows of up to {int(train.length.max())} tokens exceed the checkpoint's "
                             f"max_sequence_length={config.max_sequence_length}; lower seq_len")
        log(f"fine-tuning {init_folder}")
    else:
        config = model_config(preset, tok, d.seq_len)
        model = init_weights(LLaDAModel(config), seed=tc.seed)
    log(
        f"model: {param_count(model) / 1e6:.2f}M parameters, {config.n_layers} layers, d_model {config.d_model}, "
        f"vocab {config.vocab_size} (embedding {config.embedding_size})"
    )
    files = tokenizer_files(tok, config.max_sequence_length)

    def save(m, step):
        save_pretrained(m, out / MODEL_DIR, dtype=torch.bfloat16, max_shard_bytes=15 * 2**20, extra_files=files)

    uds_options = {}
    if tc.selector in ("uds", "uds_legacy"):
        uds_options = {"alpha": tc.uds_alpha, "queue_size": tc.uds_queue_size}
        if tc.selector == "uds":
            uds_options["ratio"] = tc.uds_ratio
    selector = make_selector(tc.selector, vocab_size=config.vocab_size, max_len=train.seq_len, seed=tc.seed,
                             **uds_options)
    trainer = Trainer(model, train, tc, config.mask_token_id, val_data=val, selector=selector, save_fn=save,
                      log_path=out / LOG_FILE)
    trainer.log.info.update(
        preset=preset.to_dict(),
        model_config=config.to_dict(),
        data={
            "train": _stats(train),
            "validation": _stats(val),
            "dropped_long": dropped,
            "corpus_seconds": round(t_gen, 1),
            "tokenize_seconds": round(t_tok, 1),
        },
    )
    result = trainer.fit()
    result.save(out / LOG_FILE)
    plot_losses(result, out / PLOT_FILE, title=f"{preset.name}: masked-diffusion loss")
    last = result.val[-1] if result.val else {}
    log(
        f"done: {result.info['steps']} steps ({result.info['stop_reason']}), {result.info['train_seconds']}s; "
        f"final validation loss {last.get('loss', float('nan')):.4f}; wrote {out / MODEL_DIR}"
    )
    return result.to_dict()
