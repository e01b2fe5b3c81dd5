import json

import pytest
import torch

from unmask.models.llada import LLaDAModel
from unmask.models.loading import load_model
from unmask.models.tokenizer import special_ids
from unmask.train import pipeline
from unmask.train.data import encode_sft
from unmask.train.presets import load_preset
from unmask.train.selection import (
    AllSelector,
    BatchSelector,
    Candidates,
    HighLossSelector,
    RandomSelector,
    n_keep,
)
from unmask.train.trainer import Trainer, init_weights, lr_factor


def tiny_model(tokenizer, seed=0):
    preset = load_preset("tiny")
    config = pipeline.model_config(preset, tokenizer, 128)
    return init_weights(LLaDAModel(config), seed=seed), preset


def test_few_steps_reduce_loss(examples, tokenizer):
    torch.manual_seed(0)
    data = encode_sft(examples[:32], tokenizer, seq_len=96)
    model, preset = tiny_model(tokenizer)
    cfg = preset.train
    cfg.steps, cfg.batch_size, cfg.eval_rows, cfg.lr, cfg.warmup_steps = 60, 8, 32, 1e-2, 5
    trainer = Trainer(model, data, cfg, special_ids(tokenizer)["mask"], val_data=data)
    before = trainer.evaluate()["loss"]
    log = trainer.fit()
    after = log.val[-1]["loss"]
    assert log.info["steps"] == 60 and log.train[-1]["step"] == 60
    assert after < 0.6 * before, (before, after)
    # the semi-autoregressive validation loss is reported beside it and is reproducible (fixed noise)
    assert 0 < log.val[-1]["loss_semi_ar"] == trainer.evaluate()["loss_semi_ar"]


class RecordingSelector:
    needs_forward = True

    def __init__(self):
        self.calls = []

    def select(self, batch: Candidates, k: int) -> torch.Tensor:
        self.calls.append((batch.logits.shape, batch.losses.shape, batch.masked.shape, k))
        assert not batch.logits.requires_grad and not batch.losses.requires_grad
        return torch.tensor([0, 2])


def test_selector_trains_on_the_selected_rows_with_the_same_noise(examples, tokenizer):
    data = encode_sft(examples[:16], tokenizer, seq_len=96)
    model, preset = tiny_model(tokenizer)
    cfg = preset.train
    cfg.steps, cfg.batch_size, cfg.selection_fraction, cfg.log_every = 2, 2, 0.5, 1
    sel = RecordingSelector()
    assert isinstance(sel, BatchSelector) and isinstance(AllSelector(), BatchSelector)
    inputs = []
    model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    log = Trainer(model, data, cfg, special_ids(tokenizer)["mask"], selector=sel).fit()
    assert len(sel.calls) == 2
    logits_shape, loss_shape, masked_shape, k = sel.calls[0]
    assert logits_shape[0] == 4 and loss_shape == (4,) and masked_shape[0] == 4 and k == 2
    scoring, training = inputs[0], inputs[1]  # step 1: scoring forward on 4 rows, train forward on rows 0, 2
    assert scoring.shape[0] == 4 and training.shape[0] == 2
    assert torch.equal(training, scoring[[0, 2]])
    assert {"score_forward_ms", "select_ms", "train_ms"} <= set(log.train[0])


def test_pad_extra_lengthens_the_canvas(examples, tokenizer):
    data = encode_sft(examples[:16], tokenizer, seq_len=256)
    widths = {}
    for extra in (0, 128):
        model, preset = tiny_model(tokenizer)
        cfg = preset.train
        cfg.steps, cfg.batch_size, cfg.pad_extra, cfg.pad_multiple = 8, 4, extra, 16
        shapes = []
        model.register_forward_pre_hook(lambda module, args, shapes=shapes: shapes.append(args[0].shape[1]))
        Trainer(model, data, cfg, special_ids(tokenizer)["mask"]).fit()
        widths[extra] = shapes
    longest = int(data.length.max())
    assert max(widths[0]) <= -(-(longest + 1) // 16) * 16  # trimmed to the longest row
    assert max(widths[128]) > max(widths[0]) and len(set(widths[128])) > 1  # random extra padding


def test_semi_ar_training_runs_and_sees_masked_suffixes(examples, tokenizer):
    """With semi_ar_prob = 1 every training forward's rows end in a run of masks (clean prefix first)."""
    data = encode_sft(examples[:16], tokenizer, seq_len=256)
    model, preset = tiny_model(tokenizer)
    cfg = preset.train
    cfg.steps, cfg.batch_size, cfg.semi_ar_prob, cfg.semi_ar_block = 4, 4, 1.0, 8
    mask_id = special_ids(tokenizer)["mask"]
    inputs = []
    model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    log = Trainer(model, data, cfg, mask_id).fit()
    assert log.info["steps"] == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log.train)
    for x in inputs:
        masked = x == mask_id
        first = masked.float().argmax(1)  # first masked column per row
        for row in range(x.shape[0]):
            if masked[row].any():
                assert masked[row, int(first[row]) + 8 :].all()


def test_baseline_selectors():
    losses = torch.tensor([0.1, 3.0, 2.0, 0.5])
    batch = Candidates(None, torch.ones(4, 3, dtype=torch.bool), losses, torch.zeros(4, 3), torch.zeros(4))
    assert HighLossSelector().select(batch, 2).tolist() == [1, 2]
    random_rows = RandomSelector(seed=1).select(batch, n_keep(4, 0.5))
    assert len(random_rows) == 2 and len(set(random_rows.tolist())) == 2
    assert AllSelector().select(batch, 4).tolist() == [0, 1, 2, 3]
    assert not RandomSelector.needs_forward and HighLossSelector.needs_forward


def test_lr_schedule():
    cfg = load_preset("tiny").train
    cfg.warmup_steps, cfg.min_lr_ratio = 10, 0.1
    assert lr_factor(0, 0.0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 0.0, cfg) == pytest.approx(1.0)
    assert lr_factor(500, 0.5, cfg) == pytest.approx(0.55)
    assert lr_factor(1000, 1.0, cfg) == pytest.approx(0.1)


@pytest.fixture
def small_corpus(examples, monkeypatch):
    """The pipeline's corpus generation replaced by the session's fixed examples (train: first 300)."""

    def fake_corpus(n_per_task, split="train", seed=0, workers=0, varied=False):
        pool = examples[:300] if split == "train" else examples[300:]
        return [ex for ex in pool if ex.task in n_per_task][: sum(n_per_task.values())]

    monkeypatch.setattr(pipeline, "generate_corpus", fake_corpus)
    monkeypatch.setattr(pipeline, "_pretrain_texts", lambda: ["Numbers: 1 2 3. Words and more words."] * 20)


def test_pipeline_writes_loadable_folder(small_corpus, tmp_path):
    preset = load_preset("tiny")
    preset.train.steps, preset.train.eval_every = 6, 3
    preset.data.seq_len, preset.data.tokenizer_vocab = 128, 320
    pipeline.run(preset, tmp_path, log=lambda *a: None)

    folder = tmp_path / "model"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert any(n.endswith(".safetensors") for n in names)
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert [r["step"] for r in log["val"]] == [3, 6] and log["info"]["steps"] == 6
    assert (tmp_path / "loss.png").stat().st_size > 1000
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llada" and config["embedding_size"] % 64 == 0
    assert config["vocab_size"] <= config["embedding_size"]

    from unmask.models.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(folder)
    assert tok.mask_id == config["mask_token_id"] and tok.eos_id == config["eos_token_id"]
    model = load_model(folder, dtype=torch.float32, device="cpu")
    ids = torch.tensor([tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}]))])
    ids = torch.cat([ids, torch.full((1, 8), tok.mask_id)], dim=1)
    with torch.no_grad():
        logits = model(ids)
    assert logits.shape == (1, ids.shape[1], config["embedding_size"]) and torch.isfinite(logits).all()


def test_pipeline_fine_tunes_a_checkpoint_with_uds(small_corpus, tmp_path):
    preset = load_preset("tiny")
    preset.train.steps, preset.train.eval_every = 2, 0
    preset.data.seq_len, preset.data.tokenizer_vocab = 128, 320
    pipeline.run(preset, tmp_path / "base", log=lambda *a: None)
    base = tmp_path / "base" / "model"

    preset.train.selector, preset.train.selection_fraction, preset.train.steps = "uds", 0.25, 3
    pipeline.run(preset, tmp_path / "sft", log=lambda *a: None, init=base)
    sft = tmp_path / "sft" / "model"
    assert (sft / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()  # the base's tokenizer
    assert json.loads((sft / "config.json").read_text()) == json.loads((base / "config.json").read_text())
    before, after = load_model(base, dtype=torch.float32, device="cpu"), load_model(sft, dtype=torch.float32)
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True))
    log = json.loads((tmp_path / "sft" / "train_log.json").read_text())
    assert log["info"]["steps"] == 3 and "select_ms" in log["train"][-1]
    assert log["info"]["train_config"]["selector"] == "uds"


def test_save_reload_same_logits(tokenizer, tmp_path):
    from unmask.models.loading import save_pretrained

    model, _ = tiny_model(tokenizer, seed=3)
    model = model.to(torch.bfloat16).float()  # representable in bf16: the save is exact
    save_pretrained(model, tmp_path / "m", dtype=torch.bfloat16)
    reloaded = load_model(tmp_path / "m", dtype=torch.float32, device="cpu")
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reloaded(ids), rtol=0, atol=0)


def test_corpus_is_sized_to_the_steps_a_run_can_read():
    from unmask.train.pipeline import corpus_sizes
    from unmask.train.trainer import TrainConfig

    sizes = {"math": 200_000, "code": 80_000, "long": 20_000}
    small = corpus_sizes(sizes, TrainConfig(steps=3, batch_size=8))
    assert small == {"math": 16, "code": 7, "long": 2}  # 24 rows needed, the same mix, rounded up
    assert corpus_sizes(sizes, TrainConfig(steps=3, batch_size=8, selection_fraction=0.25))["math"] == 64
    assert corpus_sizes(sizes, TrainConfig(steps=200_000, batch_size=128)) == sizes
