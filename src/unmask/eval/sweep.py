"""``unmask sweep``: each policy's knob swept (with and without credit) on a dev split; frontiers, not points.

The grid is a generated list of specs run by the eval runner (``run_eval``: same records, resume and
``run.json``), so a sweep folder resumes like an eval folder and a wider grid reuses every finished
(spec, task, example) record. Families: a policy with one credit variant and cache mode
(``threshold``, ``threshold+credit``, ``threshold+credit-adaptive``, ...); each has its own Pareto front.
``topk`` (the LLaDA baseline, one token per step) is always run; its family sweeps ``steps``.

Default grid: the policies ``DEFAULT_POLICIES``; knob values by knob name (``DEFAULT_VALUES``, so a
policy sharing a knob shares its grid): threshold tau 0.5-0.99, factor f 0.25-2, frechet margin delta
0-0.5, ``steps`` gen_length/2 and /4 (fixed-schedule policies such as topk run plain only); each
parallel rule plain, ``+credit`` and ``+credit-adaptive``; and credit's alpha x beta
(``DEFAULT_CREDIT_GRID``) at the policy's default knob (else the grid's middle value).

Figure of merit (``frontier.py``): per task, the target accuracy a* = baseline accuracy - ``drop``
(one point); per family, NFE and tokens/s at a* interpolated along its front, and the speedup
baseline NFE / NFE(a*), with paired bootstrap intervals over the examples.

Outputs besides the eval runner's (``records.jsonl``, ``run.json``, ``results.json``, ``results.md``):
``sweep.json`` (the analysis), ``sweep.md`` (a table per task) and ``frontier.png`` (``sweep_report.py``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unmask.decoding.policies import REGISTRY
from unmask.eval.distributed import barrier, is_main
from unmask.eval.frontier import (
    at_accuracy,
    bootstrap_counts,
    pareto_front,
    percentile_ci,
    resampled_mean,
    resampled_ratio,
)
from unmask.eval.runner import EvalReport, resolve_tasks, run_eval
from unmask.eval.spec import CREDIT_PARAMS, DecodeSpec, parse_spec, parse_specs
from unmask.models.cache import canonical_cache
from unmask.tasks.base import SPLITS, Task

BASELINE = DecodeSpec("topk")
DEFAULT_POLICIES = ("topk", "threshold", "factor", "frechet")
DEFAULT_VALUES: dict[str, tuple[float, ...]] = {  # by knob name
    "threshold": (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99),
    "factor": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "margin": (0.0, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5),
}
STEPS_DIVISORS = (2, 4)  # a ``steps`` knob's default values: gen_length / 2 and / 4, besides gen_length
DEFAULT_CREDIT_GRID: dict[str, tuple[float, ...]] = {"alpha": (0.3, 0.65, 1.0), "beta": (0.5, 0.7, 0.9)}
VARIANTS = ("plain", "credit", "credit-adaptive")
SPLIT_ALIASES = {"dev": "validation"}  # the synthetic tasks' dev split; disjoint from test by hashing


def resolve_split(split: str) -> str:
    """``dev`` -> ``validation``; other names must be a split of the tasks."""
    name = SPLIT_ALIASES.get(split, split)
    if name not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: dev, {', '.join(SPLITS)}")
    return name


# --------------------------------------------------------------------------- the grid


@dataclass
class SweepGrid:
    """What to sweep. ``values``: knob values per policy (a policy left out gets ``DEFAULT_VALUES``);
    ``credit_grid``: coefficient values crossed at the policy's centre value (empty: none)."""

    policies: tuple[str, ...] = DEFAULT_POLICIES
    values: dict[str, tuple[float | int, ...]] = field(default_factory=dict)
    variants: tuple[str, ...] = VARIANTS
    credit_grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_CREDIT_GRID))
    cache: str = "none"  # one cache mode, or several separated by ";" (their knobs swept: each its own family)

    @property
    def caches(self) -> tuple[str, ...]:
        """The swept cache modes, canonical (``dual;prompt_stale(every=2);prompt_stale(every=inf)``)."""
        return tuple(dict.fromkeys(canonical_cache(c) for c in self.cache.split(";") if c.strip())) or ("none",)

    def __post_init__(self) -> None:
        for policy in self.policies:
            if policy not in REGISTRY:
                raise ValueError(f"unknown policy {policy!r}; allowed: {', '.join(REGISTRY)}")
        for key in self.values:
            policy = key.split(".")[0]
            if policy not in self.policies:
                raise ValueError(f"--grid {key}: policy {policy!r} is not swept (--policy "
                                 f"{','.join(self.policies)}); add --policy {policy}")
        for variant in self.variants:
            if variant not in VARIANTS:
                raise ValueError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        for name in self.credit_grid:
            if name not in CREDIT_PARAMS:
                raise ValueError(f"unknown credit coefficient {name!r}; allowed: {', '.join(CREDIT_PARAMS)}")
        self.caches  # noqa: B018 (a ValueError names a bad mode and the registered ones)

    def option_combinations(self, policy: str) -> list[tuple[tuple[str, float | int], ...]]:
        """The crossed values of the policy's further options given as ``--grid POLICY.OPTION=...`` (one empty
        combination, the options' defaults, if none)."""
        grids = {key.split(".", 1)[1]: vals for key, vals in self.values.items() if key.startswith(policy + ".")}
        names = list(grids)
        return [tuple(zip(names, combo, strict=True)) for combo in itertools.product(*(grids[n] for n in names))]

    def knob_values(self, policy: str, gen_length: int, block_length: int) -> tuple[float | int | None, ...]:
        """The values swept for ``policy`` (``None``: the knob's default; for ``steps``, gen_length)."""
        cls = REGISTRY[policy]
        if policy in self.values:
            values: tuple[float | int | None, ...] = self.values[policy]
        elif fixed_schedule(policy):
            values = (None, *(gen_length // d for d in STEPS_DIVISORS))
        else:
            values = DEFAULT_VALUES.get(cls.knob.name, (cls.knob.default,))
        if fixed_schedule(policy):
            for value in values:  # steps must fit the blocks: fail before any decoding
                try:
                    cls.from_knob(value, gen_length, block_length)
                except ValueError as err:
                    raise ValueError(f"--grid {policy}: {err} (gen_length {gen_length}, block_length "
                                     f"{block_length})") from None
            values = tuple(dict.fromkeys(None if v == gen_length else v for v in values))
        return values

    def specs(self, gen_length: int, block_length: int) -> list[DecodeSpec]:
        """The baseline first, then per policy: its values plain, +credit, +credit-adaptive, then the
        credit coefficient grid at the centre value; duplicates dropped."""
        specs = [BASELINE]
        for policy in self.policies:
            values = self.knob_values(policy, gen_length, block_length)
            variants = ("plain",) if fixed_schedule(policy) else self.variants
            options = self.option_combinations(policy)
            for cache in self.caches:
                for variant in variants:
                    credit = None if variant == "plain" else variant
                    specs += [DecodeSpec(policy, v, credit, cache, policy_params=o) for v in values for o in options]
                if not fixed_schedule(policy) and "credit" in self.variants and self.credit_grid:
                    centre = centre_value(policy, values)
                    names = list(self.credit_grid)
                    for combo in itertools.product(*(self.credit_grid[k] for k in names)):
                        params = tuple(zip(names, combo, strict=True))
                        specs.append(DecodeSpec(policy, centre, "credit", cache, params))
        return list({s.label: s for s in specs}.values())


def fixed_schedule(policy: str) -> bool:
    """A policy with a ``steps`` knob (a fixed number of forwards per block, such as topk)."""
    return REGISTRY[policy].knob.name == "steps"


def centre_value(policy: str, values: Sequence[float | int | None]) -> float | int | None:
    """Where the credit coefficients are swept: the knob's default if swept, else the middle value."""
    default = REGISTRY[policy].knob.default
    return default if default in values else values[len(values) // 2]


def family(spec: DecodeSpec) -> str:
    """The family of a spec: policy, credit variant (any coefficients) and cache, e.g. ``frechet+credit@dual``."""
    text = spec.policy + (f"+{spec.credit}" if spec.credit else "")
    return text + (f"@{spec.cache}" if spec.cache != "none" else "")


def _split_values(item: str, option: str) -> tuple[str, list[str]]:
    name, sep, values = item.partition("=")
    parts = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not name.strip() or not parts:
        raise ValueError(f"{option} {item!r} must look like NAME=V1,V2,... e.g. {option} threshold=0.5,0.7,0.9")
    return name.strip().lower(), parts


def parse_grid(items: Iterable[str]) -> dict[str, tuple[float | int, ...]]:
    """``["threshold=0.5,0.9", "margin=0,0.25"]`` -> knob values per policy (NAME: a policy or its knob)."""
    knob_owners: dict[str, list[str]] = {}
    for name, cls in REGISTRY.items():
        knob_owners.setdefault(cls.knob.name, []).append(name)
    by_name = {knob: owners[0] for knob, owners in knob_owners.items() if len(owners) == 1} | {n: n for n in REGISTRY}
    grid: dict[str, tuple[float | int, ...]] = {}
    for item in items:
        name, parts = _split_values(item, "--grid")
        if "." in name:  # POLICY.OPTION=values: a further option of the policy
            policy, _, option = name.partition(".")
            knobs = {o.name: o for o in REGISTRY[policy].options} if policy in REGISTRY else None
            if knobs is None or option not in knobs:
                allowed = ", ".join(f"{p}.{o.name}" for p, c in REGISTRY.items() for o in c.options)
                raise ValueError(f"--grid {item!r}: unknown policy option {name!r}; allowed: {allowed}")
            if name in grid:
                raise ValueError(f"--grid for {name!r} given twice")
            try:
                grid[name] = tuple(dict.fromkeys(knobs[option].parse(v, policy, text=True) for v in parts))
            except ValueError as err:
                raise ValueError(f"--grid {item!r}: {err}") from None
            continue
        if name not in by_name:
            allowed = ", ".join(f"{p} (or {c.knob.name})" if by_name.get(c.knob.name) == p != c.knob.name else p
                                for p, c in REGISTRY.items())
            raise ValueError(f"--grid {item!r}: unknown policy or knob {name!r}; allowed: {allowed}")
        policy = by_name[name]
        if policy in grid:
            raise ValueError(f"--grid for {policy!r} given twice")
        try:
            grid[policy] = tuple(dict.fromkeys(REGISTRY[policy].knob.parse(v, policy, text=True) for v in parts))
        except ValueError as err:
            raise ValueError(f"--grid {item!r}: {err}") from None
    return grid


def parse_credit_grid(items: Iterable[str]) -> dict[str, tuple[float, ...]]:
    """``["alpha=0.3,1", "beta=0.5"]`` -> coefficient values; ``["none"]`` -> no coefficient grid;
    nothing given -> ``DEFAULT_CREDIT_GRID``."""
    items = list(items)
    if not items:
        return dict(DEFAULT_CREDIT_GRID)
    if [i.strip().lower() for i in items] == ["none"]:
        return {}
    from unmask.decoding.credit import CreditConfig

    grid: dict[str, tuple[float, ...]] = {}
    for item in items:
        name, parts = _split_values(item, "--credit-grid")
        if name not in CREDIT_PARAMS:
            raise ValueError(f"--credit-grid {item!r}: unknown coefficient {name!r}; allowed: "
                             f"{', '.join(CREDIT_PARAMS)} (or --credit-grid none)")
        if name in grid:
            raise ValueError(f"--credit-grid {name} given twice")
        values = []
        for part in parts:
            try:
                value = float(part)
                CreditConfig(**{name: value})
            except ValueError as err:
                reason = err if "credit" in str(err) else f"credit {name} must be a number, got {part!r}"
                raise ValueError(f"--credit-grid {item!r}: {reason}") from None
            values.append(value)
        grid[name] = tuple(dict.fromkeys(values))
    return grid


def parse_list(items: Iterable[str], allowed: Sequence[str], option: str) -> tuple[str, ...]:
    """Repeated and/or comma-separated names, each checked against ``allowed``."""
    names = [p.strip().lower() for item in items for p in item.split(",") if p.strip()]
    for name in names:
        if name not in allowed:
            raise ValueError(f"{option} {name!r} is unknown; allowed: {', '.join(allowed)}")
    return tuple(dict.fromkeys(names))


def build_grid(policies: Iterable[str] = (), grid: Iterable[str] = (), credit_grid: Iterable[str] = (),
               variants: Iterable[str] = (), cache: str = "none") -> SweepGrid:
    """A ``SweepGrid`` from the command line's strings (empty: the defaults)."""
    return SweepGrid(policies=parse_list(policies, tuple(REGISTRY), "--policy") or DEFAULT_POLICIES,
                     values=parse_grid(grid), variants=parse_list(variants, VARIANTS, "--variants") or VARIANTS,
                     credit_grid=parse_credit_grid(credit_grid), cache=cache)


# --------------------------------------------------------------------------- analysis


@dataclass
class ExampleTable:
    """Per-example values of one task, settings x examples, the examples in the same order for all (paired)."""

    specs: list[str]
    ids: list[str]
    score: np.ndarray  # [S, n]
    nfe: np.ndarray
    tokens: np.ndarray
    seconds: np.ndarray
    incomplete: list[str] = field(default_factory=list)  # specs left out: not every example decoded


def example_table(records: Iterable[dict[str, Any]], task: str, specs: Sequence[str],
                  baseline: str = BASELINE.label) -> ExampleTable:
    """The records of ``task`` as matrices over the baseline's examples; specs missing any of them are left out."""
    by_spec: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r["task"] == task:
            by_spec.setdefault(r["spec"], {})[r["id"]] = r
    if baseline not in by_spec:
        raise ValueError(f"task {task!r} has no records of the baseline {baseline!r}; a sweep always runs it")
    ids = sorted(by_spec[baseline], key=lambda i: (by_spec[baseline][i].get("index", 0), i))
    kept = [s for s in specs if s in by_spec and all(i in by_spec[s] for i in ids)]
    rows = [[by_spec[s][i] for i in ids] for s in kept]

    def matrix(key: str) -> np.ndarray:
        return np.array([[float(r[key]) for r in row] for row in rows])

    return ExampleTable(kept, ids, matrix("score"), matrix("nfe"), matrix("tokens"), matrix("seconds"),
                        [s for s in specs if s not in kept])


@dataclass
class FamilyResult:
    """One family at the matched accuracy: point estimates and ``[lower, upper]`` bootstrap intervals.

    ``nfe_speedup`` = baseline NFE / NFE(a*); ``tokens_per_s_ratio`` = tokens/s(a*) / baseline tokens/s;
    ``reached``: the share of resamples whose front reaches a*; ``best``: the cheapest setting reaching a*.
    """

    family: str
    specs: list[str]
    front: list[str]
    best: str | None
    nfe: float | None
    nfe_ci: list[float | None]
    nfe_speedup: float | None
    nfe_speedup_ci: list[float | None]
    tokens_per_s: float | None
    tokens_per_s_ci: list[float | None]
    tokens_per_s_ratio: float | None
    tokens_per_s_ratio_ci: list[float | None]
    reached: float


@dataclass
class TaskFrontier:
    """The analysis of one task: every setting's point, the baseline, the target and each family."""

    task: str
    n: int
    target: float
    baseline: dict[str, Any]
    points: list[dict[str, Any]]  # spec, family, accuracy (+ CI), mean_nfe, tokens_per_s, on_front
    families: list[FamilyResult]
    incomplete: list[str] = field(default_factory=list)


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _ci(samples: np.ndarray, confidence: float) -> list[float | None]:
    lower, upper = percentile_ci(samples, confidence)
    return [_num(lower), _num(upper)]


def analyze_task(table: ExampleTable, task: str, *, drop: float = 0.01, samples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> TaskFrontier:
    """Fronts and the matched-accuracy figures of one task (module docstring; maths in ``frontier.py``)."""
    n = len(table.ids)
    counts = bootstrap_counts(n, samples, seed)
    everything = np.ones((1, n))
    acc, nfe = resampled_mean(everything, table.score)[0], resampled_mean(everything, table.nfe)[0]
    tps = resampled_ratio(everything, table.tokens, table.seconds)[0]
    acc_b, nfe_b = resampled_mean(counts, table.score), resampled_mean(counts, table.nfe)
    tps_b = resampled_ratio(counts, table.tokens, table.seconds)
    base = table.specs.index(BASELINE.label)
    target, target_b = acc[base] - drop, acc_b[:, base] - drop

    families: dict[str, list[int]] = {}
    for k, label in enumerate(table.specs):
        families.setdefault(family(parse_spec(label)), []).append(k)
    family_of = {k: name for name, idx in families.items() for k in idx}
    on_front: set[int] = set()
    results = []
    for name, idx in families.items():
        sel = np.array(idx)
        front = sel[pareto_front(nfe[sel], acc[sel])]
        on_front.update(int(k) for k in front)
        nfe_at, tps_at = at_accuracy(nfe[sel], acc[sel], target, tps[sel])
        nfe_at_b, tps_at_b = at_accuracy(nfe_b[:, sel], acc_b[:, sel], target_b, tps_b[:, sel])
        reaching = [k for k in sel if acc[k] >= target - 1e-9]
        best = min(reaching, key=lambda k: (nfe[k], -acc[k])) if reaching else None
        with np.errstate(divide="ignore", invalid="ignore"):
            speedup_b = np.nan_to_num(nfe_b[:, base] / nfe_at_b, nan=0.0)
            ratio_b = np.nan_to_num(tps_at_b / tps_b[:, base], nan=0.0)
            speedup = nfe[base] / nfe_at
            ratio = tps_at / tps[base]
        results.append(FamilyResult(
            family=name, specs=[table.specs[k] for k in idx], front=[table.specs[k] for k in front],
            best=None if best is None else table.specs[best],
            nfe=_num(nfe_at), nfe_ci=_ci(nfe_at_b, confidence),
            nfe_speedup=_num(speedup), nfe_speedup_ci=_ci(speedup_b, confidence),
            tokens_per_s=_num(tps_at), tokens_per_s_ci=_ci(np.nan_to_num(tps_at_b, nan=0.0), confidence),
            tokens_per_s_ratio=_num(ratio), tokens_per_s_ratio_ci=_ci(ratio_b, confidence),
            reached=float(np.mean(~np.isnan(nfe_at_b))),
        ))
    acc_lo, acc_hi = percentile_ci(acc_b, confidence)
    points = [{"spec": label, "family": family_of[k], "accuracy": float(acc[k]),
               "accuracy_ci": [float(acc_lo[k]), float(acc_hi[k])], "mean_nfe": float(nfe[k]),
               "tokens_per_s": _num(tps[k]), "on_front": k in on_front}
              for k, label in enumerate(table.specs)]
    return TaskFrontier(task=task, n=n, target=float(target), baseline=points[base], points=points,
                        families=results, incomplete=table.incomplete)


def analyze(records: Iterable[dict[str, Any]], specs: Sequence[str], tasks: Sequence[str], **kwargs: Any,
            ) -> list[TaskFrontier]:
    """``analyze_task`` for every task (``kwargs``: drop, samples, seed, confidence)."""
    records = list(records)
    return [analyze_task(example_table(records, task, specs), task, **kwargs) for task in tasks]


# --------------------------------------------------------------------------- the run


@dataclass
class SweepReport:
    """What ``run_sweep`` returns: the eval report of the grid and the per-task frontier analysis."""

    eval: EvalReport
    tasks: list[TaskFrontier]
    settings: dict[str, Any]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    def task(self, name: str) -> TaskFrontier:
        for t in self.tasks:
            if t.task == name:
                return t
        raise KeyError(f"no task {name!r} in this sweep")


def run_sweep(
    lm: Any,
    grid: SweepGrid | Sequence[str | DecodeSpec],
    tasks: Iterable[str | Task] | dict[str, Task],
    out_dir: str | os.PathLike,
    *,
    n: int = 512,
    split: str = "dev",
    seed: int = 0,
    batch_size: int = 32,
    gen_length: int = 256,
    block_length: int = 32,
    early_stop: bool = True,
    chat: bool = True,
    drop: float = 0.01,
    samples: int = 1000,
    boot_seed: int = 0,
    confidence: float = 0.95,
    model_name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    plot: bool = True,
) -> SweepReport:
    """Run the grid (a ``SweepGrid`` or explicit specs; the baseline is added) on ``n`` examples of each
    task's ``split`` (``dev``: validation) and write the frontier analysis. Resumable like ``run_eval``."""
    from unmask.eval.sweep_report import write_sweep_outputs

    if not 0 <= drop < 1:
        raise ValueError(f"drop (accuracy points below the baseline) must be in [0, 1), got {drop}")
    if samples < 1:
        raise ValueError(f"samples (bootstrap resamples) must be >= 1, got {samples}")
    if isinstance(grid, SweepGrid):
        specs = grid.specs(gen_length, block_length)
    else:
        specs = parse_specs([s.label if isinstance(s, DecodeSpec) else s for s in grid])
        specs = list({s.label: s for s in [BASELINE, *specs]}.values())
    task_map = resolve_tasks(tasks)
    report = run_eval(lm, specs, task_map, out_dir, n=n, split=resolve_split(split), seed=seed,
                      batch_size=batch_size, gen_length=gen_length, block_length=block_length,
                      early_stop=early_stop, chat=chat, model_name=model_name, overwrite=overwrite,
                      progress=progress, plot=False)
    settings = {"drop": drop, "samples": samples, "boot_seed": boot_seed, "confidence": confidence,
                "specs": [s.label for s in specs],
                "grid": None if not isinstance(grid, SweepGrid) else {
                    "policies": list(grid.policies), "values": {k: list(v) for k, v in grid.values.items()},
                    "variants": list(grid.variants), "credit_grid": {k: list(v) for k, v in grid.credit_grid.items()},
                    "cache": grid.cache}}
    frontiers = analyze(report.records, [s.label for s in specs], list(task_map), drop=drop, samples=samples,
                        seed=boot_seed, confidence=confidence)
    sweep = SweepReport(eval=report, tasks=frontiers, settings=settings, out_dir=Path(out_dir))
    if is_main():  # torchrun: rank 0 writes, every rank returns with the files on disk
        sweep.files = {**report.files, **write_sweep_outputs(sweep, plot=plot)}
    barrier()
    return sweep
