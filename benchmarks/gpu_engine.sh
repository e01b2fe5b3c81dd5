#!/usr/bin/env bash
# GPU checks and measurements of the decode engine (issue 24), one GPU, in parts:
#   env     the machine
#   tests   the CUDA tests (graph replay == eager for every family, skinny, rope, grouped experts)
#   bench   `unmask bench` batch 1 (LLaDA-8B, Dream-7B, LLaDA-MoE shapes), the engine; with OLD=<tree of an earlier
#           unmask> also that tree's bench in the same machine (the before/after of the batch-1 step)
#   tput    benchmarks/engine_throughput.py on testbed-varied: continuous (the engine) vs lockstep (OLD's generate)
# Run from the repository root; results go to $OUT.   OUT=/tmp/gpu PARTS="env tests" bash benchmarks/gpu_engine.sh
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PARTS="${PARTS:-env tests bench tput}"
OLD="${OLD:-}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
part() { echo "=== $1 ($(date +%T))"; }
new() { PYTHONPATH=src python3 "$@"; }
old() { PYTHONPATH="$OLD/src" python3 "$@"; }
if has env; then
  part env
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  new -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())'
fi
if has tests; then
  part tests
  new -m pytest -q -p no:cacheprovider -x tests/models tests/decoding/test_static.py tests/serve/test_engine_families.py \
    -k "cuda or skinny or rope or grouped" 2>&1 | tail -25 | tee "$OUT/tests.log"
fi
if has bench; then
  for shape in ${SHAPES:-llada-8b dream-7b}; do
    part "bench $shape"
    new -m unmask.cli bench --random-weights "$shape" --batch 1 --cache dual --mode fused --repeats 10 \
      -o "$OUT/bench-$shape" 2>&1 | tail -8
    if [ -n "$OLD" ]; then
      part "bench $shape (before)"
      old -m unmask.cli bench --random-weights "$shape" --batch 1 --cache dual --mode fused --repeats 10 \
        -o "$OUT/before-$shape" 2>&1 | tail -8
    fi
  done
fi
if has tput; then
  for task in ${TASKS:-math code}; do
    part "tput $task"
    args=(--model testbed-varied --task "$task" -n "${N:-512}" --spec threshold:0.9@dual --spec threshold:0.9+credit
          --batch 32 --batch 256)
    new benchmarks/engine_throughput.py "${args[@]}" --mode continuous --json "$OUT/tput-$task-continuous.json"
    if [ -n "$OLD" ]; then
      old benchmarks/engine_throughput.py "${args[@]}" --mode lockstep --json "$OUT/tput-$task-lockstep.json"
    fi
  done
fi
