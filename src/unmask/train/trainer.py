"""The training loop of masked-diffusion SFT (``Trainer``): batches, optional online batch selection
(``train/selection.py``), AdamW with warm-up and cosine decay, validation, checkpoints, progress.

The objective (LLaDA's forward process and 1/p-weighted loss, and unmask's semi-autoregressive rows)
is in ``train/objective.py``; loss curves in ``train/plots.py``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from unmask.models.llada import LLaDAModel
from unmask.models.loading import resolve_device
from unmask.train.data import TokenData, length_bucketed_batches, trim_batch
from unmask.train.objective import EPS, forward_process, per_row_loss
from unmask.train.selection import AllSelector, BatchSelector, Candidates

# ----------------------------------------------------------------------------- model set-up


def init_weights(model: LLaDAModel, std: float = 0.02, seed: int | None = None) -> LLaDAModel:
    """N(0, std) for embeddings and linear layers, std / sqrt(2 n_layers) for the residual outputs
    (``attn_out``, block ``ff_out``; GPT-2 style), RMSNorm weights 1."""
    if seed is not None:
        torch.manual_seed(seed)
    n_layers = model.config.n_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                p.fill_(1.0)
            elif ".blocks." in name and (name.endswith("attn_out.weight") or name.endswith("ff_out.weight")):
                p.normal_(0.0, std / math.sqrt(2 * n_layers))
            else:
                p.normal_(0.0, std)
    return model


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Optimisation settings. ``steps`` is an upper bound when ``max_minutes`` is set: the LR
    schedule then follows ``progress = max(step / steps, elapsed / max_minutes)`` so that it decays
    fully by whichever limit comes first."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    schedule: str = "cosine"  # or "linear"
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eps: float = EPS
    max_minutes: float | None = None
    eval_every: int = 500
    eval_rows: int = 512
    log_every: int = 25
    save_every: int = 0  # 0: save at the end only
    device: str = "auto"
    autocast_bf16: bool = True  # on CUDA only
    compile: bool = False
    seed: int = 0
    selector: str = "all"  # online batch selection: all, random, high_loss, uds, uds_legacy (selection.py)
    selection_fraction: float = 1.0  # candidate batch = batch_size / fraction rows; batch_size of them train
    uds_alpha: float = 2.5e-3  # UDS: score = nuclear norm + alpha * diversity
    uds_queue_size: int = 1024  # UDS: memory buffer of selected embeddings
    uds_ratio: float = 0.5  # UDS (not uds_legacy): mask ratio of the shared scoring noise
    dynamic_padding: bool = True  # trim each batch's common padding (LLaDA pads to the batch's longest)
    pad_multiple: int = 64
    pad_extra: int = 0  # keep U{0..pad_extra} more end-of-text padding per batch (canvas-length robustness)
    semi_ar_prob: float = 0.0  # share of rows noised like a semi-autoregressive decoding canvas (forward_process)
    semi_ar_block: int = 32  # current-block width W of those rows
    data_on_device: bool = True
    progress: bool = True  # a progress bar where stderr is a terminal (else a plain line every 30 s)
    quiet: bool = False  # no bar and no periodic or validation lines

    def check(self) -> TrainConfig:
        """Every setting's type and range; a ``ValueError`` names the setting and the value given."""
        from unmask.checks import check_bool, check_choice, check_float, check_int
        from unmask.train.selection import SELECTORS

        check_int("train steps", self.steps, 1)
        check_int("train batch_size", self.batch_size, 1, 1 << 20)
        check_float("train lr", self.lr, 0, low_open=True)
        check_float("train min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_int("train warmup_steps", self.warmup_steps, 0)
        check_choice("train schedule", self.schedule, ("cosine", "linear"))
        check_float("train weight_decay", self.weight_decay, 0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"train betas must be two numbers in [0, 1), got {self.betas!r}")
        for beta in self.betas:
            check_float("train betas", beta, 0, 1, high_open=True)
        check_float("train grad_clip", self.grad_clip, 0)
        check_float("train eps", self.eps, 0, low_open=True)
        if self.max_minutes is not None:
            check_float("train max_minutes", self.max_minutes, 0, low_open=True)
        for name in ("eval_every", "save_every"):
            check_int(f"train {name}", getattr(self, name), 0)
        for name in ("eval_rows", "log_every", "uds_queue_size", "pad_multiple", "semi_ar_block"):
            check_int(f"train {name}", getattr(self, name), 1)
        if not isinstance(self.device, str):
            raise ValueError(f"train device must be a string (auto, cpu, cuda, cuda:N), got {self.device!r}")
        for name in ("autocast_bf16", "compile", "dynamic_padding", "data_on_device", "progress", "quiet"):
            check_bool(f"train {name}", getattr(self, name))
        check_int("train seed", self.seed, 0, 2**64 - 1)
        check_choice("train selector", self.selector, tuple(SELECTORS))
        check_float("train selection_fraction", self.selection_fraction, 0, 1, low_open=True)
        check_float("train uds_alpha", self.uds_alpha, 0)
        check_float("train uds_ratio", self.uds_ratio, 0, 1, low_open=True)
        check_int("train pad_extra", self.pad_extra, 0)
        check_float("train semi_ar_prob", self.semi_ar_prob, 0, 1)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


@dataclass
class TrainLog:
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"info": self.info, "train": self.train, "val": self.val}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def lr_factor(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine (or linear) decay to ``min_lr_ratio`` by progress 1."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    p = min(1.0, max(0.0, progress))
    decay = 0.5 * (1 + math.cos(math.pi * p)) if cfg.schedule == "cosine" else 1.0 - p
    return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay)


class Trainer:
    """Masked-diffusion SFT/pretraining loop for a ``LLaDAModel`` on ``TokenData``.

    ``save_fn(model, step)`` is called for checkpoints (periodic and final); ``fit`` returns the log.
    """

    def __init__(
        self,
        model: LLaDAModel,
        train_data: TokenData,
        cfg: TrainConfig,
        mask_id: int,
        val_data: TokenData | None = None,
        selector: BatchSelector | None = None,
        save_fn: Callable[[LLaDAModel, int], None] | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device).train().requires_grad_(True)
        self.mask_id = mask_id
        self.train_data, self.val_data = train_data, val_data
        self.selector = selector or AllSelector()
        self.save_fn, self.log_path = save_fn, log_path
        self.use_autocast = cfg.autocast_bf16 and self.device.type == "cuda"
        self._fwd = torch.compile(self.model) if cfg.compile else self.model
        self.opt = self._optimizer()
        self.log = TrainLog(
            info={
                "params": param_count(model),
                "device": str(self.device),
                "train_rows": len(train_data),
                "train_config": cfg.to_dict(),
            }
        )
        self.step = 0
        self.tokens_seen = 0
        self._timers: list[_PhaseTimer] = []
        # Training rows stay on the device (a few hundred MB at most); lengths stay on the host
        # so that trimming a batch needs no device sync.
        on_dev = cfg.data_on_device and self.device.type == "cuda"
        self._ids = train_data.input_ids.to(self.device) if on_dev else train_data.input_ids
        self._plen = train_data.prompt_len.to(self.device) if on_dev else train_data.prompt_len

    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for p in self.model.parameters():
            (no_decay if p.ndim < 2 else decay).append(p)  # norms: no weight decay
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=self.cfg.betas, fused=fused)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_autocast)

    def _batches(self, generator: torch.Generator):
        rows = max(1, round(self.cfg.batch_size / self.cfg.selection_fraction))
        if rows > len(self.train_data):
            raise ValueError(f"candidate batch of {rows} rows > {len(self.train_data)} training rows")
        while True:
            yield from length_bucketed_batches(self.train_data.length, rows, generator)

    def train_step(self, input_ids: torch.Tensor, prompt_len: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimiser step; returns the (detached) loss of the rows trained on.

        Plain SFT trains on the whole batch. With a selector, ``input_ids`` is the candidate batch:
        it is noised once (the training noise), scored by a no-grad forward if the selector needs one
        (``candidates``), and the forward + backward runs on the ``batch_size`` selected rows with their
        training noise (``selection.py``).
        """
        for g in self.opt.param_groups:
            g["lr"] = lr
        noisy, masked, p_mask = forward_process(
            input_ids, prompt_len, self.mask_id, self.cfg.eps,
            semi_ar_prob=self.cfg.semi_ar_prob, semi_ar_block=self.cfg.semi_ar_block,
        )
        selecting = not isinstance(self.selector, AllSelector)
        if selecting:
            timer = _PhaseTimer(self.device)
            candidates = self.candidates(input_ids, prompt_len, noisy, masked, p_mask)
            timer.mark("score_forward")
            k = min(self.cfg.batch_size, input_ids.shape[0])
            keep = self.selector.select(candidates, k)
            del candidates
            timer.mark("select")
            noisy, masked, p_mask = noisy[keep], masked[keep], p_mask[keep]
            input_ids, prompt_len = input_ids[keep], prompt_len[keep]
        with self._autocast():
            logits = self._fwd(noisy)
        loss = per_row_loss(logits, input_ids, masked, p_mask, prompt_len).mean()
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if selecting:
            timer.mark("train")
            self._timers.append(timer)
        return loss.detach()

    def candidates(
        self,
        input_ids: torch.Tensor,
        prompt_len: torch.Tensor,
        noisy: torch.Tensor,
        masked: torch.Tensor,
        p_mask: torch.Tensor,
    ) -> Candidates:
        """The candidate batch as the selector sees it, given its training noise ``(noisy, masked, p_mask)``.

        For a selector that ``needs_forward``: the logits and per-row losses of one no-grad forward, on
        the selector's ``scoring_noise`` if it brings one (UDS: a shared mask ratio), else on the
        training noise; ``masked`` is then the scoring forward's.
        """
        logits = losses = None
        if self.selector.needs_forward:
            scoring_noise = getattr(self.selector, "scoring_noise", None)
            noise = scoring_noise(input_ids, prompt_len, self.mask_id) if scoring_noise is not None else None
            if noise is not None:
                noisy, masked, p_mask = noise
            with torch.no_grad(), self._autocast():
                logits = self._fwd(noisy)
            losses = per_row_loss(logits, input_ids, masked, p_mask, prompt_len)
        return Candidates(logits, masked, losses, input_ids, prompt_len)

    def phase_times(self) -> dict[str, float]:
        """Mean milliseconds per step of each phase (score_forward, select, train) since the last call."""
        if not self._timers:
            return {}
        totals: dict[str, float] = {}
        for timer in self._timers:
            for name, ms in timer.elapsed().items():
                totals[name] = totals.get(name, 0.0) + ms
        n = len(self._timers)
        self._timers = []
        return {f"{name}_ms": round(total / n, 3) for name, total in totals.items()}

    @torch.no_grad()
    def evaluate(self, data: TokenData | None = None, seed: int = 1234) -> dict:
        """Masked-diffusion loss (and masked-token accuracy) on the first ``eval_rows`` rows, with a
        fixed noise seed so that evaluations are comparable across steps; per task when known.

        ``loss_semi_ar`` is the same loss with every row noised semi-autoregressively (``forward_process``
        with ``semi_ar_prob = 1``, its own fixed seed): what block decoding asks of the model, where the
        uniform loss can be low by copying from positions to the right that block decoding never shows.
        """
        data = data if data is not None else self.val_data
        if data is None or len(data) == 0:
            return {}
        n = min(len(data), self.cfg.eval_rows)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        semi_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.model.eval()
        losses, semi_losses, correct, count = [], [], 0, 0
        bs = self.cfg.batch_size
        for s in range(0, n, bs):
            ids = data.input_ids[s : min(n, s + bs)]
            length = data.length[s : min(n, s + bs)]
            if self.cfg.dynamic_padding:
                ids = trim_batch(ids, length, self.cfg.pad_multiple)
            ids = ids.to(self.device, torch.long)
            plen = data.prompt_len[s : min(n, s + bs)].to(self.device, torch.long)
            noisy, masked, p_mask = forward_process(ids, plen, self.mask_id, self.cfg.eps, gen)
            with self._autocast():
                logits = self.model(noisy)
            losses.append(per_row_loss(logits, ids, masked, p_mask, plen))
            correct += int((logits.argmax(-1)[masked] == ids[masked]).sum())
            count += int(masked.sum())
            noisy, masked, p_mask = forward_process(
                ids, plen, self.mask_id, self.cfg.eps, semi_gen, semi_ar_prob=1.0, semi_ar_block=self.cfg.semi_ar_block
            )
            with self._autocast():
                semi_losses.append(per_row_loss(self.model(noisy), ids, masked, p_mask, plen))
        self.model.train()
        losses = torch.cat(losses).cpu()
        out = {"step": self.step, "loss": float(losses.mean()), "masked_acc": correct / max(1, count),
               "loss_semi_ar": float(torch.cat(semi_losses).mean())}
        if data.tasks is not None:
            tasks = data.tasks[:n]
            for task in sorted(set(tasks)):
                idx = torch.tensor([i for i, t in enumerate(tasks) if t == task])
                out[f"loss_{task}"] = float(losses[idx].mean())
        return out

    def fit(self) -> TrainLog:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        batches = self._batches(gen)
        budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
        start = time.perf_counter()
        pbar = _progress(cfg.steps, cfg.progress, quiet=cfg.quiet)
        running, running_n, stop_reason = torch.zeros((), device=self.device), 0, "steps"
        window_tokens, window_t = 0, time.perf_counter()
        while self.step < cfg.steps:
            elapsed = time.perf_counter() - start
            progress = self.step / cfg.steps
            if budget_s:
                progress = max(progress, elapsed / budget_s)
                if elapsed >= budget_s:
                    stop_reason = "time"
                    break
            lr = cfg.lr * lr_factor(self.step, progress, cfg)
            idx = next(batches)
            length = self.train_data.length[idx]
            ids = self._ids[idx.to(self._ids.device)]
            if cfg.dynamic_padding:
                extra = int(torch.randint(0, cfg.pad_extra + 1, (), generator=gen)) if cfg.pad_extra else 0
                ids = trim_batch(ids, length, cfg.pad_multiple, extra)
            ids = ids.to(self.device, torch.long, non_blocking=True)
            plen = self._plen[idx.to(self._plen.device)].to(self.device, torch.long, non_blocking=True)
            running += self.train_step(ids, plen, lr)
            running_n += 1
            self.step += 1
            self.tokens_seen += ids.numel()
            window_tokens += ids.numel()
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                loss = float(running) / running_n  # one device sync per log interval
                now = time.perf_counter()
                rec = {
                    "step": self.step,
                    "loss": loss,
                    "lr": lr,
                    "elapsed_s": round(now - start, 2),
                    "tokens": self.tokens_seen,  # of the (candidate) batches drawn
                    "tok_per_s": round(window_tokens / (now - window_t)),
                    **self.phase_times(),
                }
                self.log.train.append(rec)
                pbar.update(self.step, f"loss {loss:.4f} lr {lr:.2e} {rec['tok_per_s']} tok/s")
                running, running_n, window_tokens, window_t = torch.zeros((), device=self.device), 0, 0, now
            if self.val_data is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                self._validate(pbar)
            if cfg.save_every and self.step % cfg.save_every == 0:
                self._checkpoint()
        pbar.close()
        if self.val_data is not None and (not self.log.val or self.log.val[-1]["step"] != self.step):
            self._validate(None)
        self.log.info.update(
            steps=self.step,
            stop_reason=stop_reason,
            tokens=self.tokens_seen,
            train_seconds=round(time.perf_counter() - start, 1),
        )
        self._checkpoint()
        return self.log

    def _validate(self, pbar) -> None:
        rec = self.evaluate()
        self.log.val.append(rec)
        if self.cfg.quiet:
            return
        msg = "  ".join(f"{k} {v:.4f}" for k, v in rec.items() if k != "step")
        (pbar.write if pbar is not None else print)(f"[val step {self.step}] {msg}")

    def _checkpoint(self) -> None:
        if self.save_fn is not None:
            self.save_fn(self.model, self.step)
        if self.log_path is not None:
            self.log.save(self.log_path)


class _PhaseTimer:
    """Marks the end of each phase of one step: CUDA events on a GPU (read later, no sync now), else the clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = [("start", self._now())]

    def _now(self) -> object:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def mark(self, name: str) -> None:
        self.marks.append((name, self._now()))

    def elapsed(self) -> dict[str, float]:
        """Milliseconds of each phase (synchronises on the last event)."""
        out = {}
        for (_, a), (name, b) in zip(self.marks, self.marks[1:], strict=False):
            if self.cuda:
                b.synchronize()
                out[name] = a.elapsed_time(b)
            else:
                out[name] = (b - a) * 1e3
        return out


class _progress:
    """A tqdm bar over steps where stderr is a terminal; else (disabled, or in logs) a plain line every
    ``every_s`` seconds; nothing at all if ``quiet``."""

    def __init__(self, total: int, enabled: bool, every_s: float = 30.0, quiet: bool = False) -> None:
        self.bar, self.total, self.last = None, total, time.perf_counter()
        self.every_s = math.inf if quiet else every_s
        self.quiet = quiet
        if enabled and not quiet and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=2.0)

    def update(self, step: int, text: str) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text, refresh=True)
        elif time.perf_counter() - self.last >= self.every_s:
            self.last = time.perf_counter()
            print(f"step {step}: {text}", flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        elif not self.quiet:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
