#!/usr/bin/env bash
# GPU results of the evaluation issue. Measured on one H100: bench about 2 min, baseline (n=512)
# about 3 min, grid256 + grid512 with GRID_N=64 and 9 specs about 3 min; all parts with the defaults
# (16 specs, n=128) exceed a 10-minute call, so run them in parts:
#   1. `unmask bench` at the LLaDA-8B shape with random weights: per-step latency of each cache mode
#      at batch 1 and 32, beside the weight-read and FLOP floors;
#   2. the embedded testbed model's accuracy with the LLaDA baseline (topk, one token per step,
#      block 32) on the math, code and long test splits;
#   3. every policy on the embedded model (math, code, long) at gen_length 256 and 512, block 32.
# Run from the repository root; results go to $OUT (bench/, baseline/, grid256/, grid512/).
#     OUT=/tmp/gpu bash benchmarks/gpu_eval.sh
# PARTS picks steps (default "bench baseline grid256 grid512"); SPECS overrides the policy list;
# BASELINE_N and GRID_N the examples per task; MODEL another model folder (default: the embedded one).
set -euo pipefail
OUT="${OUT:-runs/gpu}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
UNMASK="python3 -m unmask.cli"
MODEL_ARGS=()
[[ -n "${MODEL:-}" ]] && MODEL_ARGS=(-m "$MODEL")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

PARTS="${PARTS:-bench baseline grid256 grid512}"
SPECS="${SPECS:-topk threshold:0.9 threshold:0.7 factor:1.0 factor:2.0 frechet:0.25 frechet:0 topk+credit
  threshold:0.9+credit factor:1.0+credit frechet:0.25+credit threshold:0.9+credit-adaptive threshold:0.9@prefix
  threshold:0.9@dual factor:1.0@dual frechet:0.25@dual}"
SPEC_ARGS=()
for s in $SPECS; do SPEC_ARGS+=(-s "$s"); done
has() { [[ " $PARTS " == *" $1 "* ]]; }

has bench && $UNMASK bench --random-weights llada-8b --batch 1 --batch 32 -o "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
has baseline && $UNMASK eval "${MODEL_ARGS[@]}" -s topk -t math -t code -t long -n "${BASELINE_N:-512}" -b 128 --gen-length 512 \
    -o "$OUT/baseline" --no-progress 2>&1 | tee "$OUT/baseline.log"
has grid256 && $UNMASK eval "${MODEL_ARGS[@]}" "${SPEC_ARGS[@]}" -t math -t code -t long -n "${GRID_N:-128}" -b 128 --gen-length 256 \
    -o "$OUT/grid256" --no-progress 2>&1 | tee "$OUT/grid256.log"
has grid512 && $UNMASK eval "${MODEL_ARGS[@]}" "${SPEC_ARGS[@]}" -t math -t code -t long -n "${GRID_N:-128}" -b 128 --gen-length 512 \
    -o "$OUT/grid512" --no-progress 2>&1 | tee "$OUT/grid512.log"
true
