"""Embedded models by name: unmask.load("testbed-varied"), --model NAME, unmask train --init NAME."""

import shutil
from pathlib import Path

import pytest
import torch

import unmask
from unmask import api
from unmask.tasks import get_task

REAL = api.embedded_model_path()


@pytest.fixture
def assets(tmp_path, monkeypatch) -> Path:
    """A stand-in assets folder: the real testbed and a testbed-varied folder without weights, as in a build
    that leaves them out (this package ships them: ``test_real_testbed_varied_*`` loads those)."""
    root = tmp_path / "assets"
    shutil.copytree(REAL, root / "testbed")
    (root / "testbed-varied").mkdir()
    (root / "testbed-varied" / "README.md").write_text("weights come later\n")
    monkeypatch.setattr(api, "_assets_dir", lambda: root)
    monkeypatch.chdir(tmp_path)
    return root


def test_names_and_paths(assets):
    assert api.embedded_model_path() == assets / "testbed"
    assert api.embedded_model_path("embedded") == assets / "testbed"
    assert api.embedded_model_path("testbed-varied") == assets / "testbed-varied"
    with pytest.raises(ValueError, match="known: testbed, testbed-varied"):
        api.embedded_model_path("testbed-huge")
    assert api.shipped_models() == ["testbed"]
    assert api.named_model_folder(None) == assets / "testbed"
    assert api.named_model_folder("embedded") == assets / "testbed"
    assert api.named_model_folder("some/hub-id") is None and api.named_model_folder(str(assets)) is None


def test_unshipped_model_fails_clearly(assets):
    with pytest.raises(FileNotFoundError, match="testbed-varied is not shipped in this build.*shipped: testbed"):
        unmask.load("testbed-varied")


def test_varied_folder_with_weights_loads_by_name(assets):
    """Weights dropped into the folder (here a copy of testbed's) make the name loadable."""
    for f in REAL.iterdir():
        shutil.copy(f, assets / "testbed-varied" / f.name)
    assert api.shipped_models() == ["testbed", "testbed-varied"]
    lm = unmask.load("testbed-varied", device="cpu")
    assert lm.path == assets / "testbed-varied"
    assert unmask.load(device="cpu").path == assets / "testbed"


def test_local_folder_of_the_same_name_wins(assets, tmp_path):
    shutil.copytree(REAL, tmp_path / "testbed-varied")  # cwd is tmp_path
    assert api.named_model_folder("testbed-varied") is None
    assert unmask.load("testbed-varied", device="cpu").path == Path("testbed-varied")


def test_train_init_by_name(assets, tmp_path):
    from unmask.train.cli import train_command

    with pytest.raises(FileNotFoundError, match="testbed-varied is not shipped"):
        train_command.__wrapped__(out=tmp_path / "o", config="tiny", init="testbed-varied", **_defaults())


def _defaults() -> dict:
    import inspect

    from unmask.train.cli import train_command

    sig = inspect.signature(train_command.__wrapped__)
    return {n: p.default.default for n, p in sig.parameters.items() if n not in ("out", "config", "init")}


# Math validation examples (the claims' dev split) and whether testbed-varied answers each correctly at the
# claims' setting: threshold:0.9, gen 256, block 32, greedy, early stop (float32 on the CPU; testbed answers
# the same six [0, 0, 1, 1, 0, 1], 3 of 6, at about 12 tokens per forward).
VARIED_EXAMPLES = {47: "math-eca5b035308f502e", 39: "math-db76d741461b2267", 14: "math-c7314ac38d6c75de",
                   13: "math-df56ea02b0cbcd2f", 8: "math-1cdfb56b6ec74333", 0: "math-6641cd1f1c80ef93"}
VARIED_CORRECT = [1, 1, 0, 1, 0, 1]


def test_real_testbed_varied_is_shipped_and_differs_from_testbed():
    assert api.shipped_models() == ["testbed", "testbed-varied"]
    varied = api.embedded_model_path("testbed-varied")
    assert {f.name for f in varied.glob("*.safetensors")} == {"model-00001-of-00002.safetensors",
                                                              "model-00002-of-00002.safetensors"}
    assert all(f.read_bytes() != g.read_bytes() for f in varied.glob("*.safetensors") for g in REAL.glob("*"))


def test_real_testbed_varied_answers_as_recorded():
    """The shipped weights decode the recorded way: threshold:0.9 on math commits about 3.4 answer tokens per
    forward (docs/benchmarks/claims.md; testbed: 13.7) and answers these examples as listed above."""
    lm = unmask.load("testbed-varied", device="cpu")
    assert lm.path == api.embedded_model_path("testbed-varied") and lm.model.dtype == torch.float32
    task = get_task("math")
    examples = task.examples("validation", 48)
    chosen = [examples[i] for i in VARIED_EXAMPLES]
    assert [e.id for e in chosen] == list(VARIED_EXAMPLES.values())
    out = lm.generate([e.prompt for e in chosen], policy="threshold", threshold=0.9, gen_length=256, block_length=32)
    correct = [int(task.score(e, text)) for e, text in zip(chosen, out.texts, strict=True)]
    assert correct == VARIED_CORRECT, out.texts
    tokens_per_forward = int(out.lengths.sum()) / int(out.nfe_per_row.sum())
    assert 3.0 < tokens_per_forward < 6.0, tokens_per_forward  # 4.37 here; testbed 11.9
