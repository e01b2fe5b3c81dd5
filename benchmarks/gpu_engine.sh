#!/usr/bin/env bash
# GPU checks and measurements of the decode engine (issue 24), one GPU, in parts:
#   env     the machine
#   tests   the CUDA tests (graph replay == eager for every family, skinny, rope, grouped experts)
#   bench   `unmask bench` batch 1 (LLaDA-8B, Dream-7B, LLaDA-MoE shapes), the engine; with OLD=<tree of an earlier
#           unmask> also that tree's bench in the same machine (the before/after of the batch-1 step)
#   tput    benchmarks/engine_throughput.py on testbed-varied: continuous (the engine) vs lockstep (OLD's generate)
#   diff    benchmarks/graph_diff.py: captured vs eager logits per step, 32 layers, 96 steps (LLaDA-8B, Dream-7B)
#   batch1  benchmarks/batch1_e2e.py (LLaDA-8B shape, dual): ms per forward, and OLD's in the same machine
#   profile benchmarks/engine_profile.py on testbed-varied math: host phases and GPU time per step kind
#   serve   benchmarks/serve_load.py (LLaDA-8B shape, random weights) at --max-batch 8 and 32 vs offline
# Run from the repository root; results go to $OUT; SITE=<folder of extra packages> (the server's, where the
# image lacks them) is put on the path.   OUT=/tmp/gpu PARTS="env tests" bash benchmarks/gpu_engine.sh
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PARTS="${PARTS:-env tests bench tput}"
OLD="${OLD:-}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
part() { echo "=== $1 ($(date +%T))"; }
new() { PYTHONPATH="src${SITE:+:$SITE}" python3 "$@"; }
old() { PYTHONPATH="$OLD/src${SITE:+:$SITE}" python3 "$@"; }
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
if has diff; then
  for shape in ${SHAPES:-llada-8b dream-7b}; do
    part "graph_diff $shape"
    new benchmarks/graph_diff.py --shape "$shape" --layers "${LAYERS:-32}" --steps "${STEPS:-96}" \
      --json "$OUT/diff-$shape.json" 2>&1 | grep -v "tokens_equal': True" | tail -6
  done
fi
if has batch1; then
  part batch1
  new benchmarks/batch1_e2e.py --json "$OUT/batch1-new.json" 2>&1 | tail -3
  [ -n "$OLD" ] && old benchmarks/batch1_e2e.py --json "$OUT/batch1-old.json" 2>&1 | tail -3
  new benchmarks/batch1_e2e.py --json "$OUT/batch1-new2.json" 2>&1 | tail -3
fi
if has profile; then
  part profile
  new benchmarks/engine_profile.py --model testbed-varied --task math -n "${N:-512}" --batch 32 --compile "${COMPILE:-fused}" \
    --json "$OUT/profile.json" 2>&1 | tail -40
fi
if has serve; then
  for mb in ${MAX_BATCH:-8 32}; do
    part "serve max-batch $mb"
    new benchmarks/serve_load.py --random-weights llada-8b --rates inf -n "$mb" --max-tokens 256 --prompt-length 256 \
      --max-batch "$mb" -o "$OUT/serve-b$mb" --trace "$OUT/serve-b$mb-trace.json" 2>&1 | tail -4
  done
fi
if has bench; then
  for shape in ${SHAPES:-llada-8b dream-7b llada-moe-7b-a1b}; do
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
          --batch 32 --batch 256 --compile "${COMPILE:-fused}")
    new benchmarks/engine_throughput.py "${args[@]}" --mode continuous --json "$OUT/tput-$task-continuous.json"
    if [ -n "$OLD" ]; then
      old benchmarks/engine_throughput.py "${args[@]}" --mode lockstep --json "$OUT/tput-$task-lockstep.json"
    fi
  done
fi
