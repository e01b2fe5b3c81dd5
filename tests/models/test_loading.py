"""Checkpoints in the HF layout load (single file, sharded, each dtype); broken ones fail clearly."""

import json

import pytest
import torch
from llada_fixtures import random_weights, tiny_config, write_checkpoint

from unmask.models import CheckpointError, load_model, save_pretrained
from unmask.models.loading import resolve_model_path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shards", [1, 3])
def test_loads_real_layout_in_each_dtype(tmp_path, dtype, shards):
    cfg = tiny_config()
    w = random_weights(cfg, dtype=dtype)
    model = load_model(write_checkpoint(tmp_path / "m", cfg, w, shards=shards), dtype="float32")
    state = model.state_dict()
    assert set(state) == set(w)
    for name, tensor in w.items():
        torch.testing.assert_close(state[name], tensor.float())
    assert model.dtype == torch.float32


def test_save_pretrained_round_trip_sharded(tmp_path, tiny_ckpt):
    model = load_model(tiny_ckpt, dtype="float32")
    out = save_pretrained(model, tmp_path / "copy", dtype="float32", max_shard_bytes=40_000)
    assert (out / "model.safetensors.index.json").is_file()
    assert len(list(out.glob("*.safetensors"))) > 1
    again = load_model(out, dtype="float32")
    x = torch.randint(0, 100, (1, 9))
    torch.testing.assert_close(again(x), model(x))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".copy")]  # no temp folder left


def test_unknown_path_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="no/such/model/dir"):
        resolve_model_path(tmp_path / "no/such/model/dir")


def test_not_a_hub_id():
    with pytest.raises(CheckpointError, match="not a hub id"):
        resolve_model_path("definitely not a model")


def test_bad_json_config(tmp_path, tiny_ckpt):
    (tiny_ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tiny_ckpt)


def test_wrong_model_type(tmp_path, tiny_ckpt):
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (tiny_ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model_type 'gpt2' is not supported \(supported: llada"):
        load_model(tiny_ckpt)


def test_missing_weights(tmp_path):
    cfg = tiny_config()
    w = random_weights(cfg)
    del w["model.transformer.ln_f.weight"]
    with pytest.raises(CheckpointError, match="missing.*ln_f"):
        load_model(write_checkpoint(tmp_path / "m", cfg, w))


def test_wrong_shape(tmp_path):
    cfg = tiny_config()
    w = random_weights(cfg)
    w["model.transformer.blocks.0.q_proj.weight"] = torch.zeros(3, 3, dtype=torch.float64)
    with pytest.raises(CheckpointError, match="q_proj.weight has shape"):
        load_model(write_checkpoint(tmp_path / "m", cfg, w))


def test_corrupt_safetensors(tiny_ckpt):
    (tiny_ckpt / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_model(tiny_ckpt)


def test_no_weights(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny_config()))
    with pytest.raises(CheckpointError, match="no safetensors"):
        load_model(folder)


def test_hub_id_goes_through_snapshot_download(monkeypatch, tiny_ckpt):
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, local_files_only=False):
        calls.append((repo_id, local_files_only))
        return str(tiny_ckpt)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = load_model("GSAI-ML/LLaDA-8B-Instruct", dtype="float32")
    assert calls == [("GSAI-ML/LLaDA-8B-Instruct", False)]
    assert model.config.n_layers == 2


def test_hub_id_offline_error_names_the_id(monkeypatch):
    import huggingface_hub

    def offline(repo_id, allow_patterns=None, local_files_only=False):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="'GSAI-ML/LLaDA-8B-Instruct' is not a local folder.*network unreachable"):
        load_model("GSAI-ML/LLaDA-8B-Instruct")


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    cfg = tiny_config()
    weights = random_weights(cfg)
    weights["model.transformer.blocks.1.ff_out.weight"][3, :5] = float("nan")
    folder = write_checkpoint(tmp_path / "nan", cfg, weights)
    with pytest.raises(CheckpointError, match=r"weight model\.transformer\.blocks\.1\.ff_out\.weight holds 5 "
                                              r"non-finite value\(s\)"):
        load_model(folder, dtype="float32")
