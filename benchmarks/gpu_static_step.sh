#!/usr/bin/env bash
# GPU results of the static decode step (CUDA graphs + torch.compile), one H100, in parts:
#   env      the machine, and torch.topk's order among equal values on CUDA (the references' tie order)
#   check    graph replay == eager step on a small random LLaDA, every policy x cache x credit x early stop
#   profile  torch profiler summary of one step, eager vs graph, at the LLaDA-8B shape (batch 1)
#   bench    `unmask bench` at the LLaDA-8B shape, batch 1 and 32, eager and graph
#   fastdllm Fast-dLLM's generate* side by side (needs FASTDLLM=path of a Fast-dLLM checkout, and einops)
#   skinny   launch configurations of the Triton skinny matmul against cuBLAS (8B projections, 32 rows)
#   ab       the fused step with and without the Triton kernels, interleaved in one process
# Run from the repository root; results go to $OUT.
#     OUT=/tmp/gpu PARTS="env check profile" bash benchmarks/gpu_static_step.sh
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PARTS="${PARTS:-env check profile bench fastdllm}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
part() { echo "=== $1 ($(date +%T))"; }

if has env; then
  part env
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
for n in (4, 32, 1000):
    v = torch.zeros(n, device="cuda", dtype=torch.float64)
    print(f"topk over {n} equal values, k=3 ->", torch.topk(v, 3).indices.tolist(),
          "| argmax ->", int(v.argmax()))
PY
fi
has check && { part check; timeout 400 python3 benchmarks/graph_check.py --out "$OUT" 2>&1 | tee "$OUT/check.log"; }
has profile && { part profile; timeout 300 python3 benchmarks/profile_step.py --out "$OUT" --cache dual --cache none \
  --cache prefix 2>&1 | tee "$OUT/profile.log"; }
has bench && { part bench; timeout 560 python3 -m unmask.cli bench --random-weights llada-8b ${BENCH_ARGS:---batch 1 --batch 32} \
  -o "$OUT/bench" 2>&1 | tee "$OUT/bench.log"; }
has skinny && { part skinny; timeout 400 python3 benchmarks/skinny_probe.py --out "$OUT" 2>&1 | tee "$OUT/skinny.log"; }
has ab && { part ab; timeout 400 python3 benchmarks/step_ab.py --cache dual --cache prefix --rounds 2 --out "$OUT" 2>&1 \
  | tee "$OUT/step_ab.log"; }
has fastdllm && { part fastdllm; timeout 560 python3 benchmarks/fastdllm_side_by_side.py --fastdllm "${FASTDLLM:-.fastdllm}" \
  --out "$OUT" 2>&1 | tee "$OUT/fastdllm.log"; }
part done
