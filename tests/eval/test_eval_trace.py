"""Decoding traces: the PNG is written and the per-step commit counts add up to the generated tokens."""

from __future__ import annotations

import numpy as np
import pytest

from unmask.eval.trace import trace_generation


@pytest.mark.parametrize("spec, early_stop", [("threshold:0.5+credit", False), ("topk", False), ("factor:1", True)])
def test_trace_png_and_counts(tiny_lm, tmp_path, spec, early_stop):
    out = tmp_path / "trace.png"
    trace = trace_generation(tiny_lm, "hello w1 w2 w3", spec, gen_length=64, block_length=32, early_stop=early_stop,
                             out=out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and trace.path == out
    assert len(trace.step_counts) == trace.nfe
    assert all(c >= 1 for c in trace.step_counts)  # every step commits at least one token
    assert sum(trace.step_counts) + trace.early_stop_filled == trace.gen_length == 64
    assert len(trace.tokens) == 64 and trace.commit_step.shape == (64,)
    committed = trace.commit_step >= 0
    assert np.all((trace.commit_confidence[committed] >= 0) & (trace.commit_confidence[committed] <= 1 + 1e-6))
    if not early_stop:
        assert trace.early_stop_filled == 0 and sum(trace.step_counts) == 64
    if spec == "topk":
        assert trace.step_counts == [1] * 64


def test_trace_long_generation_without_labels(tiny_lm, tmp_path):
    (tmp_path / "sub").mkdir()  # the output folder must exist: a mistyped path creates no folders
    trace = trace_generation(tiny_lm, "hello w4", "threshold:0.9@dual", gen_length=128, block_length=32,
                             out=tmp_path / "sub" / "t.png")
    assert trace.path.is_file()
    assert sum(trace.step_counts) + trace.early_stop_filled == 128


def test_trace_bad_spec(tiny_lm):
    with pytest.raises(ValueError, match="bad decoding spec 'fastest'"):
        trace_generation(tiny_lm, "hello", "fastest")
