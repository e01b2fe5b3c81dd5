#!/usr/bin/env bash
# Train the embedded testbed model (preset "testbed") on one GPU and write it to $OUT.
#
# Run from the repository root on a machine with torch, tokenizers, safetensors, numpy, matplotlib,
# rich, typer, tqdm and jinja2 (the package itself need not be installed):
#     OUT=/tmp/testbed MINUTES=7.5 bash benchmarks/gpu_train.sh [extra train options]
# The shipped model is this run followed by four fine-tuning rounds with semi-autoregressive rows,
# e.g. `MINUTES=5 bash benchmarks/gpu_train.sh --init embedded --seed 3 --pad-extra 256 --semi-ar 0.5
# --lr 3e-4 --train-sizes math=300000,code=50000,long=20000` (docs/benchmarks/testbed.md lists all five
# stages; benchmarks/gpu_round.sh runs one round with its checks).
#
# Writes (8 files, each < 16 MiB, at most two levels below $OUT):
#     $OUT/model/{config.json, tokenizer.json, tokenizer_config.json,
#                 model.safetensors.index.json, model-0000{1,2}-of-00002.safetensors}
#     $OUT/train_log.json   $OUT/loss.png
# MINUTES is the training-loop budget; corpus generation, tokenizer training, final validation and
# saving add about a minute, so 7.5 keeps the whole command under a 10-minute limit.
set -euo pipefail
OUT="${OUT:-runs/testbed}"
MINUTES="${MINUTES:-7.5}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

python3 -m unmask.train.cli --config testbed --out "$OUT" --max-minutes "$MINUTES" --no-progress "$@"

# Check the result: file limits, and that the folder loads and runs.
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path

import torch

from unmask.models.loading import load_model
from unmask.models.tokenizer import Tokenizer

out = Path(sys.argv[1])
files = sorted(p for p in out.rglob("*") if p.is_file())
for p in files:
    print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.relative_to(out)}")
big = [p for p in files if p.stat().st_size >= 16 * 2**20]
print(f"{len(files)} files; over 16 MiB: {[str(p) for p in big]}")
model = load_model(out / "model", device="cuda" if torch.cuda.is_available() else "cpu")
tok = Tokenizer.from_pretrained(out / "model")
n = sum(p.numel() for p in model.parameters())
print(f"reloaded: {n / 1e6:.2f}M parameters, dtype {model.dtype}")
log = json.loads((out / "train_log.json").read_text())
info = log["info"]
print(f"steps {info['steps']} ({info['stop_reason']}), {info['train_seconds']} s, {info['tokens'] / 1e6:.1f}M tokens")
if log["val"]:
    print("final validation:", {k: round(v, 4) for k, v in log["val"][-1].items()})
# A cheap look at the model: one-shot argmax fill of a masked answer (not the real decoder).
prompt = tok.apply_chat_template([{"role": "user", "content": "What is 17 + 25?"}])
ids = torch.tensor([tok.encode(prompt) + [tok.mask_id] * 48], device=model.device)
with torch.no_grad():
    pred = model(ids).argmax(-1)[0, -48:]
print("one-shot fill:", repr(tok.decode(pred.tolist(), skip_special_tokens=False)[:200]))
PY
