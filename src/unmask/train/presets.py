"""Training presets: model shape + optimisation + data sizes.

- ``testbed``: the embedded testbed model (docs/design.md §7): LLaDA architecture, about 14-15M
  parameters (about 31 MB in bf16, two safetensors shards under 16 MiB each), BPE vocabulary 3072.
- ``tiny``: a 2-layer, d_model 64 model for tests on the CPU.

A JSON file can stand for a preset: ``{"base": "testbed", "model": {...}, "train": {...}, "data": {...}}``
(every section optional; fields override the base preset's).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from unmask.train.trainer import TrainConfig

MAX_SEQ_LEN = 1 << 16  # rows are padded to seq_len in memory
MAX_EXAMPLES = 10_000_000  # per task


@dataclass
class DataConfig:
    """Where the training rows come from (``unmask.tasks.corpus``) and how they are cut."""

    n_per_task: dict[str, int] = field(default_factory=lambda: {"math": 1000, "code": 500, "long": 100})
    n_val_per_task: dict[str, int] = field(default_factory=lambda: {"math": 128, "code": 64, "long": 32})
    seq_len: int = 1536  # rows are padded with end-of-text to this length (longer ones are dropped)
    tokenizer_vocab: int = 3072
    tokenizer_examples: int = 20000  # SFT examples (plus pretrain_text()) the BPE merges are learnt on
    pretrain: bool = False  # also train on pretrain_text() as pretraining-style rows (prompt_len 0)
    varied: bool = False  # targets in a style drawn per row (train and validation rows; tasks/phrasing.py)
    varied_share: float = 1.0  # with varied: the share of rows drawn varied (the rest keep canonical targets)
    workers: int = 0  # processes generating the corpus; 0: one per CPU core
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        return cls(**d)

    def check(self) -> DataConfig:
        """Every setting's type and range; a ``ValueError`` names the setting and the value given."""
        from unmask.checks import check_bool, check_float, check_int
        from unmask.models.tokenizer import SPECIAL_TOKENS
        from unmask.tasks.registry import TASK_NAMES

        for name in ("n_per_task", "n_val_per_task"):
            sizes = getattr(self, name)
            if not isinstance(sizes, dict) or not sizes:
                raise ValueError(f"data {name} must map task names to example counts, got {sizes!r}")
            for task, n in sizes.items():
                if task not in TASK_NAMES:
                    raise ValueError(f"data {name}: unknown task {task!r} (allowed: {', '.join(TASK_NAMES)})")
                check_int(f"data {name}[{task!r}]", n, 0, MAX_EXAMPLES)
            if not sum(sizes.values()):
                raise ValueError(f"data {name} asks for no examples at all: {sizes!r}")
        check_int("data seq_len", self.seq_len, 8, MAX_SEQ_LEN)
        check_int("data tokenizer_vocab", self.tokenizer_vocab, 256 + len(SPECIAL_TOKENS), 1 << 20)
        check_int("data tokenizer_examples", self.tokenizer_examples, 1)
        check_bool("data pretrain", self.pretrain)
        check_bool("data varied", self.varied)
        check_float("data varied_share", self.varied_share, 0.0, 1.0)
        check_int("data workers", self.workers, 0, 4096)
        check_int("data seed", self.seed, 0, 2**64 - 1)
        return self


@dataclass
class Preset:
    name: str
    model: dict  # LLaDAConfig fields; vocabulary and special ids come from the trained tokenizer
    train: TrainConfig
    data: DataConfig

    def to_dict(self) -> dict:
        return {"name": self.name, "model": dict(self.model), "train": self.train.to_dict(), "data": asdict(self.data)}

    def check(self) -> Preset:
        """The training and data settings' types and ranges (``TrainConfig.check``, ``DataConfig.check``)."""
        self.train.check()
        self.data.check()
        return self


PRESETS: dict[str, Preset] = {
    "testbed": Preset(
        name="testbed",
        model=dict(
            d_model=384,
            n_heads=8,
            n_kv_heads=8,
            n_layers=8,
            mlp_hidden_size=896,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            max_sequence_length=2048,
            weight_tying=False,
        ),
        train=TrainConfig(
            steps=200_000,
            batch_size=128,
            lr=1e-3,
            min_lr_ratio=0.05,
            warmup_steps=300,
            weight_decay=0.1,
            grad_clip=1.0,
            eval_every=1000,
            eval_rows=512,
            log_every=50,
            max_minutes=8.0,
        ),
        data=DataConfig(
            n_per_task={"math": 200_000, "code": 80_000, "long": 20_000},
            n_val_per_task={"math": 256, "code": 128, "long": 64},
            seq_len=1536,
            tokenizer_vocab=3072,
            tokenizer_examples=30_000,
        ),
    ),
    "tiny": Preset(
        name="tiny",
        model=dict(
            d_model=64,
            n_heads=4,
            n_kv_heads=4,
            n_layers=2,
            mlp_hidden_size=128,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            max_sequence_length=512,
            weight_tying=False,
        ),
        train=TrainConfig(
            steps=30,
            batch_size=8,
            lr=3e-3,
            warmup_steps=5,
            eval_every=0,
            eval_rows=32,
            log_every=5,
            progress=False,
            data_on_device=False,
        ),
        data=DataConfig(
            n_per_task={"math": 200, "code": 50},
            n_val_per_task={"math": 16, "code": 8},
            seq_len=512,
            tokenizer_vocab=512,
            tokenizer_examples=250,
            workers=1,
        ),
    ),
}


def _merge_dataclass(obj, updates: dict, what: str):
    names = {f.name for f in fields(obj)}
    unknown = sorted(set(updates) - names)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown} (known: {sorted(names)})")
    merged = {**asdict(obj), **updates}
    return type(obj).from_dict(merged)


def load_preset(name_or_path: str) -> Preset:
    """A preset by name, or a JSON file ``{"base": ..., "model": ..., "train": ..., "data": ...}``."""
    if name_or_path in PRESETS:
        return copy.deepcopy(PRESETS[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"unknown preset {name_or_path!r}: not one of {sorted(PRESETS)} and not a JSON file")
    spec = json.loads(path.read_text())
    base = load_preset(spec.get("base", "testbed"))
    unknown = sorted(set(spec) - {"base", "name", "model", "train", "data"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}")
    return Preset(
        name=spec.get("name", path.stem),
        model={**base.model, **spec.get("model", {})},
        train=_merge_dataclass(base.train, spec.get("train", {}), "train"),
        data=_merge_dataclass(base.data, spec.get("data", {}), "data"),
    )
