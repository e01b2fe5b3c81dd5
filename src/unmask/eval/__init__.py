"""Evaluation harness: decoding specs x tasks grids (resumable), the quick policy comparison, decoding
traces, and an lm-evaluation-harness adapter (``unmask.eval.lm_eval_adapter``, imported on demand)."""

from unmask.eval.compare import COMPARE_SPECS, print_report, run_compare
from unmask.eval.records import read_records
from unmask.eval.report import aggregate, pareto_front
from unmask.eval.runner import EvalConfig, EvalReport, run_eval
from unmask.eval.spec import DecodeSpec, parse_spec, parse_specs
from unmask.eval.trace import Trace, plot_trace, trace_generation

__all__ = [
    "COMPARE_SPECS", "DecodeSpec", "EvalConfig", "EvalReport", "Trace", "aggregate", "pareto_front", "parse_spec",
    "parse_specs", "plot_trace", "print_report", "read_records", "run_compare", "run_eval", "trace_generation",
]
