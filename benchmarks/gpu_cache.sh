#!/usr/bin/env bash
# GPU measurements of the refresh-light cache modes (issue 25), one GPU, in parts:
#   speed  benchmarks/cache_speed.py at the LLaDA-8B shape (random weights, fused): batch 32 and 1, 4 and 1
#          tokens per step, every mode vs dual (tok/s, refresh share); one JSON per (batch, tokens per step)
#   acc    `unmask eval` on testbed-varied and testbed, math and code, n = 512: threshold:0.9 and
#          threshold:0.95+credit with each mode, dual and no cache (records packed in acc.tar.gz, for
#          benchmarks/claims_pairs.py)
# Run from the repository root; results go to $OUT.   OUT=/tmp/gpu PARTS="speed acc" bash benchmarks/gpu_cache.sh
set -uo pipefail
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PARTS="${PARTS:-speed acc}"
MODES="${MODES:-dual partial(budget=16) partial(budget=8,reuse=1) partial(budget=0,reuse=1)}"
has() { [[ " $PARTS " == *" $1 "* ]]; }
part() { echo "=== $1 ($(date +%T))"; }
cache_args=()
for m in $MODES; do cache_args+=(--cache "$m"); done
if has speed; then
  for setting in ${SETTINGS:-32x4 1x4 1x1 32x1}; do
    batch="${setting%x*}" tps="${setting#*x}"
    part "speed batch $batch, $tps tokens/step"
    python3 benchmarks/cache_speed.py --shape "${SHAPE:-llada-8b}" --batch "$batch" --tokens-per-step "$tps" \
      "${cache_args[@]}" --json "$OUT/speed-b$batch-t$tps.json" 2>&1 | grep -v Warning | cut -c1-220
  done
fi
if has acc; then
  specs=()
  for rule in threshold:0.9 threshold:0.95+credit; do
    specs+=(-s "$rule")  # no cache
    for m in $MODES; do specs+=(-s "$rule@$m"); done
  done
  for model in ${MODELS:-testbed-varied testbed}; do
    part "acc $model"
    python3 -m unmask.cli eval -m "$model" "${specs[@]}" -t math -t code -n "${N:-512}" -b 32 --compile exact \
      -o "$OUT/acc/$model" --no-progress 2>&1 | tail -30
  done
  tar -czf "$OUT/acc.tar.gz" -C "$OUT" --exclude='*.png' acc && rm -rf "$OUT/acc"
fi
