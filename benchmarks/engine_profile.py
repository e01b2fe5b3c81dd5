"""Where an engine step's time goes: host work per phase and GPU time per step kind (CUDA events).

Decodes a task's prompts through ``generate(..., slots=)`` twice (the first pass captures every graph),
and in the second pass times, per engine call, the host (``time.perf_counter``) and, per replayed step
kind, the GPU (a CUDA event pair around each replay, read after the run: no extra syncs). The report
says how much of the wall time the GPU was busy and which host phases keep it waiting.

    python benchmarks/engine_profile.py --model testbed-varied --task math -n 512 --spec threshold:0.9@dual \
        --batch 32 --compile fused --json out.json
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch

import unmask
from unmask.decoding import engine as engine_module
from unmask.eval.spec import parse_specs
from unmask.tasks.registry import get_task

HOST = collections.defaultdict(float)  # phase -> seconds
CALLS = collections.Counter()
EVENTS: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
ACTIVE = {"on": False}


def timed(name: str, method):
    def wrapper(self, *args, **kwargs):
        if not ACTIVE["on"]:
            return method(self, *args, **kwargs)
        tic = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            HOST[name] += time.perf_counter() - tic
            CALLS[name] += 1
    return wrapper


def instrument() -> None:
    cls = engine_module.DecodeEngine
    for name in ("step", "admit_many", "retire", "compact", "_draw_noise", "_share_time"):
        setattr(cls, name, timed(name, getattr(cls, name)))
    run = cls._run

    def run_with_events(self, kind):
        if not ACTIVE["on"] or self.device.type != "cuda":
            return run(self, kind)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        tic = time.perf_counter()
        run(self, kind)
        HOST[f"replay {kind[0]}"] += time.perf_counter() - tic
        CALLS[f"replay {kind[0]}"] += 1
        end.record()
        EVENTS.append((kind[0], start, end))
    cls._run = run_with_events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed-varied")
    ap.add_argument("--task", default="math")
    ap.add_argument("--spec", default="threshold:0.9@dual")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("-n", type=int, default=512)
    ap.add_argument("--compile", default="fused")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    instrument()
    lm = unmask.load(args.model)
    prompts = [lm.tokenizer.apply_chat_template([{"role": "user", "content": e.prompt}])
               for e in get_task(args.task).examples("test", args.n, 0)]
    spec = parse_specs([args.spec])[0]
    kwargs = dict(gen_length=256, block_length=32, compile=args.compile, slots=args.batch, chat=False,
                  **spec.generate_kwargs())
    lm.generate(prompts, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    ACTIVE["on"] = True
    tic = time.perf_counter()
    out = lm.generate(prompts, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - tic
    ACTIVE["on"] = False
    gpu = collections.defaultdict(float)
    kinds = collections.Counter()
    for kind, start, end in EVENTS:
        gpu[kind] += start.elapsed_time(end) / 1e3
        kinds[kind] += 1
    steps = CALLS["step"]
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "spec": args.spec, "batch": args.batch, "n": args.n, "wall_s": wall, "steps": steps,
        "ms_per_step": 1e3 * wall / max(steps, 1),
        "tokens_per_s": float(out.lengths.sum()) / wall, "slot_efficiency": out.slot_efficiency,
        "host_ms_per_step": {k: 1e3 * v / max(steps, 1) for k, v in sorted(HOST.items())},
        "calls": dict(CALLS),
        "gpu_ms_per_step": {k: 1e3 * v / max(steps, 1) for k, v in sorted(gpu.items())},
        "gpu_ms_per_replay": {k: 1e3 * gpu[k] / kinds[k] for k in gpu},
        "gpu_busy_share": sum(gpu.values()) / wall,
    }
    print(json.dumps(report, indent=1))
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
