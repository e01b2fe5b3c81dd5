#!/usr/bin/env bash
# One fine-tuning round of the embedded testbed model on one GPU, checked and packed for the trip back.
#
#     OUT=/tmp/round MINUTES=6 SEED=3 bash benchmarks/gpu_round.sh [extra train options]
#
# 1. `gpu_train.sh --init embedded` with the stage-3 recipe of docs/benchmarks/testbed.md (semi-AR share
#    0.5, extra padding, lr 3e-4, fresh rows drawn with SEED) into $WORK/train; extra options override it
#    (later ones win), e.g. stage 5 of the shipped model: `--init <stage 4 model> --semi-ar 0.95 --lr 2e-4
#    --train-sizes math=400000,code=40000,long=20000`;
# 2. `math_probe.py` (does it compute step results from the left context?) on the old and new model;
# 3. the baseline decoder (topk, block 32, gen 512) on math and code, n=$N (default 512), and
#    `math_errors.py` on it;
# 4. $OUT gets the two weight shards as they are (each < 16 MiB) and everything else in rest.tgz:
#    copy the shards into src/unmask/assets/testbed if the numbers are better.
# MINUTES 6 keeps the whole command near 9 minutes on an H100. On a machine with two GPUs, two variants
# run side by side, e.g.
#     CUDA_VISIBLE_DEVICES=0 OUT=$OUT/a WORK=/tmp/ra bash benchmarks/gpu_round.sh > /tmp/a.log 2>&1 &
#     CUDA_VISIBLE_DEVICES=1 OUT=$OUT/b WORK=/tmp/rb SEED=4 bash benchmarks/gpu_round.sh --semi-ar 0.8; wait
set -euo pipefail
OUT="${OUT:-runs/round}"
WORK="${WORK:-/tmp/unmask_round}"
MINUTES="${MINUTES:-6}"
SEED="${SEED:-3}"
N="${N:-512}"
PROBE_N="${PROBE_N:-128}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"

OUT="$WORK/train" MINUTES="$MINUTES" bash benchmarks/gpu_train.sh --init embedded --seed "$SEED" \
    --train-sizes math=300000,code=50000,long=20000 --pad-extra 256 --semi-ar 0.5 --lr 3e-4 "$@" \
    2>&1 | tee "$WORK/train.log"
cp "$WORK"/train/model/*.safetensors "$OUT"/   # first, so that a timeout below still returns the model
{
    python3 benchmarks/math_probe.py -n "$PROBE_N"
    python3 benchmarks/math_probe.py -n "$PROBE_N" -m "$WORK/train/model"
} 2>&1 | tee "$WORK/probe.txt"
python3 -m unmask.cli eval -m "$WORK/train/model" -s topk -t math -t code -n "$N" -b 256 --gen-length 512 \
    -o "$WORK/baseline" --no-progress 2>&1 | tee "$WORK/baseline.log"
python3 benchmarks/math_errors.py "$WORK/baseline/records.jsonl" | tee "$WORK/errors.txt"

tar czf "$OUT/rest.tgz" -C "$WORK" train/model/config.json train/model/tokenizer.json \
    train/model/tokenizer_config.json train/model/model.safetensors.index.json train/train_log.json \
    train/loss.png train.log probe.txt baseline baseline.log errors.txt
ls -la "$OUT"
