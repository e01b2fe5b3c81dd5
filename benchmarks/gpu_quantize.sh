#!/usr/bin/env bash
# Quantized weights (issue 28), one GPU, random weights, one process per (shape, mode):
#   probe  benchmarks/quant_probe.py: each projection alone, bf16 vs int8/fp8/int4, conversion instructions vs the
#          integer bit tricks (--bits), a few launch configurations
#   speed  benchmarks/cache_speed.py at the LLaDA-8B shape, dual cache, batch 1 and 32, 1 and 4 tokens per step,
#          bf16 then each of int8, fp8, int4: ms per step, the mode's own weight-read floor, tok/s
#   bench  `unmask bench` (fused, dual, batch 1) of the Dream-7B and LLaDA-MoE shapes in each mode
#   acc    `unmask eval` on testbed-varied and testbed, math and code, n = 512, threshold:0.9@dual, each mode
#          (records in acc.tar.gz for benchmarks/claims_pairs.py: paired intervals against bf16)
# Run from the repository root; results go to $OUT.    OUT=/tmp/gpu PARTS="speed bench acc" bash benchmarks/gpu_quantize.sh
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PARTS="${PARTS:-probe speed bench acc}"   # BITS=1: the speed part with skinny.BIT_TRICKS
QMODES="${QMODES:-none int8 fp8 int4 fp8-w8a8}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
part() { echo "=== $1 ($(date +%T))"; }
if has probe; then
  part "kernel probe (conversions vs bit tricks, launch configurations)"
  python3 benchmarks/quant_probe.py --bits --configs "${CONFIGS:-64x128x1x4x4,64x256x1x4x4,128x256x1x4x8,64x256x2x4x4}" \
    --json "$OUT/quant-probe.json" 2>&1 | grep -v Warning | grep -v '"config"' | cut -c1-200
fi
if has speed; then
  for q in $QMODES; do
    part "speed llada-8b $q"
    flag=(); [[ "$q" != none ]] && flag=(--quantize "$q")
    python3 benchmarks/cache_speed.py --shape llada-8b --batch 1 --batch 32 --tokens-per-step 1 \
      --tokens-per-step 4 --cache dual "${flag[@]}" ${BITS:+--bits} --json "$OUT/quant-speed-$q.json" 2>&1 \
      | grep -v Warning | cut -c1-200
  done
fi
if has bench; then
  for shape in dream-7b llada-moe-7b-a1b; do
    for q in $QMODES; do
      part "bench $shape $q"
      flag=(); [[ "$q" != none ]] && flag=(--quantize "$q")
      python3 -m unmask.cli bench --random-weights "$shape" --batch 1 --cache dual --mode fused --repeats 10 \
        "${flag[@]}" -o "$OUT/bench-$shape-$q" 2>&1 | tail -3
    done
  done
fi
if has acc; then
  for q in $QMODES; do
    flag=(); [[ "$q" != none ]] && flag=(--quantize "$q")
    for model in ${MODELS:-testbed-varied testbed}; do
      part "acc $model $q"
      python3 -m unmask.cli eval -m "$model" -s threshold:0.9@dual -t math -t code -n "${N:-512}" -b 32 \
        --compile exact "${flag[@]}" -o "$OUT/qacc/$model-$q" --no-progress 2>&1 | tail -8
    done
  done
  tar -czf "$OUT/qacc.tar.gz" -C "$OUT" --exclude='*.png' qacc && rm -rf "$OUT/qacc"
fi
