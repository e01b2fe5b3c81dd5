#!/usr/bin/env bash
# LLaDA2.x at speed (issue 29), one GPU, random weights:
#   speed  benchmarks/cache_speed.py --shape llada2-mini: batch 1 and 32, 1 and 4 tokens per step, the exact
#          block cache (dual) vs none: tok/s and the refresh share
#   bench  `unmask bench --random-weights llada2-mini --cache dual --mode fused`: step ms against the weight-read
#          floor of the weights a step reads (the routed experts only), batch 1 and 32
# llada2-flash (100B; its experts stay bf16 under weight-only quantization: about 200 GB) does not fit one
# GPU; tensor parallelism is out of scope.      OUT=/tmp/gpu PARTS="speed bench" bash benchmarks/gpu_llada2.sh
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PARTS="${PARTS:-speed bench}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
part() { echo "=== $1 ($(date +%T))"; }
if has speed; then
  part "speed llada2-mini"
  python3 benchmarks/cache_speed.py --shape llada2-mini --batch 1 --batch 32 --tokens-per-step 1 --tokens-per-step 4 \
    --cache dual --cache none --json "$OUT/llada2-speed.json" 2>&1 | grep -v Warning | cut -c1-200
fi
if has bench; then
  part "bench llada2-mini"
  python3 -m unmask.cli bench --random-weights llada2-mini --batch 1 --batch 32 --cache dual --mode fused \
    --repeats 10 -o "$OUT/bench-llada2-mini" 2>&1 | tail -4
fi
