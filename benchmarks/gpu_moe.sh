#!/usr/bin/env bash
# The fused MoE step (issue 29), one GPU, random weights, in parts:
#   tests  the CUDA tests of the expert paths (fused == loop, graph replay, both MoE families)
#   probe  benchmarks/moe_probe.py: one layer's experts at 32, 128 and 1024 tokens, grouped vs fused launch
#          configurations, against the floor of the experts touched (LLaDA-MoE and LLaDA2-mini shapes)
#   bench  `unmask bench --mode fused --cache dual` for llada-moe-7b-a1b and llada2-mini, batch 1 and 32, with
#          --expert-path grouped and fused: the step against its weight-read floor
# Run from the repository root; results go to $OUT.   OUT=/tmp/gpu PARTS="tests probe bench" bash benchmarks/gpu_moe.sh
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PARTS="${PARTS:-tests probe bench}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
part() { echo "=== $1 ($(date +%T))"; }
if has tests; then
  part tests
  python3 -m pytest -q -p no:cacheprovider tests/models/test_fused_moe.py tests/models/test_llada_moe.py \
    tests/models/test_llada2.py -k "fused or cuda or grouped" 2>&1 | tail -8
fi
if has probe; then
  part probe
  python3 benchmarks/moe_probe.py --shape ${SHAPES:-llada-moe llada2-mini} --tokens ${TOKENS:-32 128 1024} \
    ${QUICK:+--quick} --json "$OUT/moe-probe.json" 2>&1 | grep -v Warning | cut -c1-260
fi
if has bench; then
  for shape in ${BENCH_SHAPES:-llada-moe-7b-a1b llada2-mini}; do
    for path in grouped fused; do
      part "bench $shape $path"
      python3 -m unmask.cli bench --random-weights "$shape" --batch 1 --batch 32 --cache dual --mode fused \
        --expert-path "$path" --repeats 10 -o "$OUT/bench-$shape-$path" 2>&1 | grep -v Warning | tail -4
    done
  done
fi
