"""Evaluation harness: decoding specs x tasks grids (resumable), sweeps with frontiers at matched accuracy
and tuning, the quick policy comparison, decoding traces, and an lm-evaluation-harness adapter
(``unmask.eval.lm_eval_adapter``, imported on demand)."""

from unmask.eval.compare import COMPARE_SPECS, print_report, run_compare
from unmask.eval.records import read_records
from unmask.eval.report import aggregate, pareto_front
from unmask.eval.runner import EvalConfig, EvalReport, run_eval
from unmask.eval.spec import DecodeSpec, parse_spec, parse_specs
from unmask.eval.sweep import SweepGrid, SweepReport, build_grid, run_sweep
from unmask.eval.trace import Trace, plot_trace, trace_generation
from unmask.eval.tune import TuneReport, run_tune

__all__ = [
    "COMPARE_SPECS", "DecodeSpec", "EvalConfig", "EvalReport", "SweepGrid", "SweepReport", "Trace", "TuneReport",
    "aggregate", "build_grid", "pareto_front", "parse_spec", "parse_specs", "plot_trace", "print_report",
    "read_records", "run_compare", "run_eval", "run_sweep", "run_tune", "trace_generation",
]
