"""Continuous batching against lockstep batches on a data set: answer tokens/s, forwards, slot efficiency.

``--mode continuous`` decodes all prompts of a task through one engine of ``--batch`` slots (a row leaves
when it is finished, the next prompt takes its slot); ``--mode lockstep`` decodes them in consecutive
batches of ``--batch`` rows that each wait for their slowest row. Lockstep is measured by running this
same script on an unmask tree from before the engine (``PYTHONPATH=<old>/src``), whose ``generate(list)``
decodes a batch in lockstep; on the engine, ``--mode lockstep`` emulates it (a batch per call).

Each (task, spec) is decoded twice and the second pass is timed (the first compiles and captures every
bucket's graphs). Decoding only is timed: the chat template is rendered before the clock starts (both
trees pay the same tokenizing), scoring comes after. Slot efficiency = row-steps a row needed
(its forwards) / row-steps computed (slots stepped): lockstep computes batch x steps per batch.

    python benchmarks/engine_throughput.py --model testbed-varied --task math --task code -n 512 \
        --spec threshold:0.9@dual --spec threshold:0.9+credit --batch 32 --batch 256 --mode continuous --json out.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import time

import torch

import unmask
from unmask.eval.spec import parse_specs
from unmask.tasks.registry import get_task


def run(lm, prompts: list[str], spec, batch: int, mode: str, gen_length: int, block_length: int,
        compile: str | None = None) -> dict:
    kwargs = dict(gen_length=gen_length, block_length=block_length, compile=compile, chat=False,
                  **spec.generate_kwargs())
    has_slots = "slots" in inspect.signature(lm.generate).parameters
    tokens, texts, nfe_rows, computed = 0, [], [], 0
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    tic = time.perf_counter()
    if mode == "continuous":
        out = lm.generate(prompts, slots=batch, **kwargs)
        outs = [out]
        computed = sum(out.nfe_per_row.tolist()) / max(out.slot_efficiency, 1e-9)
    else:
        outs = [lm.generate(prompts[i:i + batch], **kwargs) for i in range(0, len(prompts), batch)]
        if has_slots:  # on the engine a lone batch also leaves rows at once: count it as lockstep would
            computed = sum(len(o.texts) * int(o.nfe_per_row.max()) for o in outs)
        else:
            computed = sum(len(o.texts) * o.nfe for o in outs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tic
    for o in outs:
        tokens += int(o.lengths.sum())
        texts += o.texts
        nfe_rows += o.nfe_per_row.tolist()
    return {"seconds": seconds, "answer_tokens": tokens, "tokens_per_s": tokens / seconds,
            "row_forwards": sum(nfe_rows), "computed_row_steps": computed,
            "slot_efficiency": sum(nfe_rows) / computed if computed else 1.0, "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed-varied")
    ap.add_argument("--task", action="append", default=[])
    ap.add_argument("--spec", action="append", default=[])
    ap.add_argument("--batch", action="append", type=int, default=[])
    ap.add_argument("-n", type=int, default=512)
    ap.add_argument("--split", default="test")
    ap.add_argument("--mode", choices=["continuous", "lockstep"], default="continuous")
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--compile", default=None, help="fused | exact | off (default: the model's)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    lm = unmask.load(args.model)
    rows = []
    for task_name in args.task or ["math"]:
        task = get_task(task_name)
        examples = task.examples(args.split, args.n, 0)
        # rendered once, outside the timed decodes (``chat=False`` below)
        prompts = [lm.tokenizer.apply_chat_template([{"role": "user", "content": e.prompt}]) for e in examples]
        for spec in parse_specs(args.spec or ["threshold:0.9@dual"]):
            for batch in args.batch or [32]:
                settings = (spec, batch, args.mode, args.gen_length, args.block_length, args.compile)
                run(lm, prompts, *settings)  # warm-up pass
                result = run(lm, prompts, *settings)
                texts = result.pop("texts")
                scores = [float(task.score(e, t)) for e, t in zip(examples, texts, strict=True)]
                result.update(task=task_name, spec=spec.label, batch=batch, mode=args.mode, n=len(prompts),
                              compile=args.compile,
                              accuracy=sum(scores) / len(scores))
                print(json.dumps(result), flush=True)
                rows.append(result)
                info = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                        "torch": torch.__version__, "rows": rows}
                with open(args.json, "w") as f:  # after every row: a run cut short keeps what it measured
                    json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
