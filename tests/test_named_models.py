"""Embedded models by name: unmask.load("testbed-varied"), --model NAME, unmask train --init NAME."""

import shutil
from pathlib import Path

import pytest

import unmask
from unmask import api

REAL = api.embedded_model_path()


@pytest.fixture
def assets(tmp_path, monkeypatch) -> Path:
    """An assets folder with the real testbed and an empty testbed-varied (not shipped yet)."""
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


def test_shipped_varied_model_loads_by_name(assets):
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
