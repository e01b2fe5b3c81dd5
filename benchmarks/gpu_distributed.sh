#!/usr/bin/env bash
# Scaling of `unmask sweep` / `unmask eval` under torchrun on one host with 2 GPUs (nvidia-h100-x2):
#   (a) sweep: a small policy sweep on the embedded testbed model (11 settings x math, code);
#   (b) grid8b: an eval grid on the LLaDA-8B shape with random weights (`--model random:llada-8b`, benchmark
#       only: the texts are noise, the speed is the real shape's; no early stop, so every row runs all steps).
# Each runs with 1 process, then `torchrun --standalone --nproc-per-node $NPROC`, into fresh folders.
# Writes $OUT/distributed.json and $OUT/distributed.md: wall time per world size (the whole command: start,
# model load, CUDA graphs, decode, reports), decode time (the slowest rank's summed batch times),
# speedup T1 / TN, scaling efficiency T1 / (N * TN), and whether the records equal the 1-process ones.
# About 6 minutes on 2 H100s with the defaults (estimated). Run from the repository root:
#     OUT=/tmp/dist bash benchmarks/gpu_distributed.sh
# or in two calls into the same OUT (the tables cover every part run there):
#     OUT=/tmp/dist PARTS=sweep bash benchmarks/gpu_distributed.sh; OUT=/tmp/dist PARTS=grid8b bash ...
# PARTS picks parts (default "sweep grid8b"); SWEEP_N, GRID_N: examples per task; NPROC: processes (2);
# COMPILE: decode step mode (exact: CUDA graphs over the eager kernels; no torch.compile to warm up);
# SWEEP_BATCH, GRID_BATCH, SWEEP_GEN: batch sizes and the sweep's gen length; SHAPE: the random-weight shape of
# (b); GEN_8B: its gen length. CPU smoke test of the plumbing (about 1 minute on 2 cores):
#     OUT=/tmp/dist SWEEP_N=4 GRID_N=4 SWEEP_BATCH=2 GRID_BATCH=2 SWEEP_GEN=32 SHAPE=llada-tiny GEN_8B=32 \
#       COMPILE=off DEVICE=cpu bash benchmarks/gpu_distributed.sh
set -euo pipefail
OUT="${OUT:-runs/distributed}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PARTS="${PARTS:-sweep grid8b}"
NPROC="${NPROC:-2}"
COMPILE="${COMPILE:-exact}"
DEVICE_ARGS=()
[[ -n "${DEVICE:-}" ]] && DEVICE_ARGS=(--device "$DEVICE")
mkdir -p "$OUT"
touch "$OUT/walls.tsv"  # one line per run; a part run again replaces its lines
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
has() { [[ " $PARTS " == *" $1 "* ]]; }

# run NAME NPROC unmask-args...: the command into $OUT/NAME-NPROC, its wall time appended to walls.tsv
run() {
  local name=$1 nproc=$2 dir="$OUT/$1-$2" start end command
  shift 2
  rm -rf "$dir"
  if [[ $nproc == 1 ]]; then command=(python3 -m unmask.cli)
  else command=(python3 -m torch.distributed.run --standalone --nproc-per-node "$nproc" -m unmask.cli); fi
  command+=("$@" "${DEVICE_ARGS[@]}" --compile "$COMPILE" --no-progress -o "$dir")
  start=$(date +%s.%N)
  "${command[@]}" > "$dir.log" 2>&1 \
    || { echo "FAILED: $name with $nproc process(es); tail of $dir.log:"; tail -20 "$dir.log"; exit 1; }
  end=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$nproc" "$start" "$end" "${command[*]}" >> "$OUT/walls.tsv"
  echo "$name x$nproc: $(python3 -c "print(f'{$end - $start:.1f}')") s"
}

SWEEP_ARGS=(sweep -p threshold,factor -g threshold=0.5,0.7,0.9 -g factor=1,2 --variants plain,credit
            --credit-grid none -t math -t code -n "${SWEEP_N:-256}" -b "${SWEEP_BATCH:-64}"
            --gen-length "${SWEEP_GEN:-256}"
            --samples 200)
GRID_ARGS=(eval -m "random:${SHAPE:-llada-8b}" -s topk@dual -s threshold:0.9@dual -t math -n "${GRID_N:-256}"
           -b "${GRID_BATCH:-32}" --gen-length "${GEN_8B:-128}" --block-length 32 --no-early-stop)
for part in sweep grid8b; do
  has "$part" || continue
  { grep -v "^$part"$'\t' "$OUT/walls.tsv" || true; } > "$OUT/walls.tmp" && mv "$OUT/walls.tmp" "$OUT/walls.tsv"
  [[ $part == sweep ]] && args=("${SWEEP_ARGS[@]}") || args=("${GRID_ARGS[@]}")
  run "$part" 1 "${args[@]}"
  run "$part" "$NPROC" "${args[@]}"
done

python3 - "$OUT" "$NPROC" <<'EOF'
import json, sys, time
from pathlib import Path

out, nproc = Path(sys.argv[1]), int(sys.argv[2])
KEYS = ("spec", "task", "id", "score", "nfe", "tokens", "completion")


def records(folder):
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line.strip()]


def decode_seconds(recs, world):
    """The slowest rank's summed batch times: batch j (in the grid's order) was decoded by rank j % world."""
    batches = {}
    for r in recs:
        batches.setdefault(r["batch"], r["batch_seconds"])
    per_rank = [0.0] * world
    for j, seconds in enumerate(batches.values()):
        per_rank[j % world] += seconds
    return max(per_rank), per_rank


runs = []
for line in (out / "walls.tsv").read_text().splitlines():
    name, world, start, end, command = line.split("\t")
    recs = records(out / f"{name}-{world}")
    slowest, per_rank = decode_seconds(recs, int(world))
    runs.append({"part": name, "processes": int(world), "wall_s": float(end) - float(start), "decode_s": slowest,
                 "decode_s_per_rank": per_rank, "examples": len(recs), "command": command})
scaling = []
for one in (r for r in runs if r["processes"] == 1):
    for many in (r for r in runs if r["part"] == one["part"] and r["processes"] > 1):
        n = many["processes"]
        a, b = records(out / f"{one['part']}-1"), records(out / f"{one['part']}-{n}")
        same = [{k: r[k] for k in KEYS} for r in a] == [{k: r[k] for k in KEYS} for r in b]
        scaling.append({"part": one["part"], "processes": n, "speedup": one["wall_s"] / many["wall_s"],
                        "efficiency": one["wall_s"] / (n * many["wall_s"]),
                        "decode_efficiency": one["decode_s"] / (n * many["decode_s"]),
                        "records_identical": same, "examples": len(b)})
env = {"date": time.strftime("%Y-%m-%d")}
try:
    import torch

    env |= {"torch": torch.__version__, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
except Exception as err:  # noqa: BLE001
    env["torch"] = f"unavailable: {err}"
(out / "distributed.json").write_text(json.dumps({"env": env, "runs": runs, "scaling": scaling}, indent=2) + "\n")

lines = [f"# unmask under torchrun: scaling on {', '.join(env.get('gpus') or ['cpu'])}", "",
         f"torch {env.get('torch')}, {env['date']}. Wall: the whole command (start, model load, decode, reports); "
         "decode: the slowest rank's summed batch times. Efficiency = T1 / (N * TN).", "",
         "| part | processes | examples | wall s | decode s | speedup (wall) | efficiency (wall) | efficiency (decode) "
         "| records = 1 process |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
for r in runs:
    s = next((x for x in scaling if x["part"] == r["part"] and x["processes"] == r["processes"]), None)
    cells = [r["part"], r["processes"], r["examples"], f"{r['wall_s']:.1f}", f"{r['decode_s']:.1f}",
             f"{s['speedup']:.2f}x" if s else "1.00x", f"{s['efficiency']:.2f}" if s else "-",
             f"{s['decode_efficiency']:.2f}" if s else "-", ("yes" if s["records_identical"] else "no") if s else "-"]
    lines.append("| " + " | ".join(map(str, cells)) + " |")
lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in runs]
(out / "distributed.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
