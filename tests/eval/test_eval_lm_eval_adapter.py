"""lm-evaluation-harness adapter: a tiny local generate_until task run through simple_evaluate."""

from __future__ import annotations

import json

import pytest

from unmask.decoding.config import DEFAULT_SPEC

lm_eval = pytest.importorskip("lm_eval", reason="lm_eval is not installed")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from unmask.eval.lm_eval_adapter import UnmaskLM, build_spec, cut_at_stops  # noqa: E402

TASK_YAML = """\
task: unmask_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["w30"]
  max_gen_toks: 40
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture
def task_dir(tmp_path):
    data = tmp_path / "tiny.jsonl"
    rows = [{"question": "hello w1 w2", "answer": "w68"}, {"question": "hello w3", "answer": "w5"},
            {"question": "the answer is w7", "answer": "w9"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "unmask_tiny.yaml").write_text(TASK_YAML.format(data=data))
    return folder


def test_simple_evaluate_generate_until(tiny_ckpt, task_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = lm_eval.simple_evaluate(
        model="unmask", model_args=f"pretrained={tiny_ckpt},spec=threshold:0.7@dual,device=cpu",
        tasks=["unmask_tiny"], task_manager=TaskManager(include_path=str(task_dir)), batch_size=2,
        log_samples=True,
    )
    assert "exact_match,none" in results["results"]["unmask_tiny"]
    samples = results["samples"]["unmask_tiny"]
    assert len(samples) == 3
    for sample in samples:
        response = sample["resps"][0][0]
        assert "w30" not in response.split()  # cut at the until string


def test_generate_until_directly(tiny_ckpt, tiny_lm):
    model = UnmaskLM(lm=tiny_lm, policy="threshold", threshold=0.5, credit=True, batch_size=2)
    assert model.spec.label == "threshold:0.5+credit"
    requests = [Instance("generate_until", {}, (ctx, {"until": ["w68"], "max_gen_toks": 20}), i)
                for i, ctx in enumerate(["hello w1", "hello w2 w3", "w4"])]
    out = model.generate_until(requests, disable_tqdm=True)
    full = tiny_lm.generate(["hello w1", "hello w2 w3", "w4"], policy="threshold", threshold=0.5, credit=True,
                            gen_length=32, block_length=32).texts
    assert out == [cut_at_stops(t, ["w68"]) for t in full]
    with pytest.raises(NotImplementedError, match="Monte-Carlo"):
        model.loglikelihood(requests)
    with pytest.raises(NotImplementedError, match="Monte-Carlo"):
        model.loglikelihood_rolling(requests)


def test_registration_and_args():
    from lm_eval.api.registry import get_model

    assert get_model("unmask") is UnmaskLM
    assert build_spec(None, "frechet", {"margin": 0.3}, None, "prefix").label == "frechet:0.3@prefix"
    assert build_spec("factor:2+credit", None, {}, None, None).label == "factor:2+credit"
    assert build_spec(None, None, {"threshold": None}, None, None).label == DEFAULT_SPEC  # the fast default
    assert build_spec(None, "topk", {}, None, None).label == "topk"  # LLaDA's baseline
    with pytest.raises(ValueError, match="do not apply to policy 'threshold'"):
        build_spec(None, "threshold", {"factor": 1.0}, None, None)
    with pytest.raises(ValueError, match="not both"):
        build_spec("topk", "threshold", {}, None, None)
    with pytest.raises(ValueError, match="not both"):
        build_spec("topk", None, {"threshold": 0.5}, None, None)
    assert cut_at_stops("a b STOP c END", ["END", "STOP", ""]) == "a b "


def test_model_args_win_over_cli_config(tiny_ckpt):
    model = UnmaskLM.create_from_arg_string(f"pretrained={tiny_ckpt},device=cpu,spec=factor:1",
                                            {"device": "cuda:0", "batch_size": 3, "max_batch_size": None})
    assert model.batch_size == 3 and model.lm.device.type == "cpu" and model.spec.label == "factor:1"


def test_module_cli(tiny_ckpt, task_dir, monkeypatch, capsys):
    import sys

    from unmask.eval.lm_eval_adapter import main

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() rewrites it for lm_eval's parser
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    main(["--model", "unmask", "--model_args", f"pretrained={tiny_ckpt},policy=frechet,margin=0.2,device=cpu",
          "--tasks", "unmask_tiny", "--include_path", str(task_dir), "--batch_size", "3"])
    assert "unmask_tiny" in capsys.readouterr().out
