#!/usr/bin/env bash
# The GPU check: at most ~8 minutes on one CUDA GPU, no network. Results (JSON) and a weights-only checkpoint
# of the `paper` preset land in OUT_DIR (the checkpoint inside device_check.tgz); export and evaluate that
# checkpoint on the CPU afterwards:
#
#   scripts/device_check.sh OUT_DIR [DATASET.npz]          # on the GPU machine (torch, JAX, numpy present)
#   DEVICE_CHECK_DRY_RUN=1 scripts/device_check.sh /tmp/dc  # the same plumbing on a CPU, tiny budgets
#   mkdir dc && tar -xzf OUT_DIR/device_check.tgz -C dc                          # back here, on the CPU
#   evor-edge export dc/run-evor-paper --out engines/gpu-paper
#   evor-edge eval engines/gpu-paper --env pointmaze-medium-navigate-singletask-task1-v0 --episodes 50
#
# DATASET is a self-contained file (docs/datasets.md) made by `evor-edge data import`, so neither ogbench nor
# MuJoCo is needed there; default .device/pointmaze-medium-navigate-task1.npz (carry `.device`).
# Stages: env.json; train_throughput.json (eager, CUDA graph); JAX in its own process (appended to
# train_throughput.json; 120 s: XLA's compile of the unrolled flows is slow); the paper preset trained for what
# the budget leaves (~3.5 min) with `--time-limit`; gpu_engine_latency.json; then the torch.compile modes with
# whatever time is left. Each stage has its own timeout; a failed stage is logged and the next one runs.
# OUT_DIR receives device_check.log, the JSON summaries and device_check.tgz (everything, the checkpoint
# included), refreshed after every stage.
set -uo pipefail
OUT=${1:?usage: scripts/device_check.sh OUT_DIR [DATASET.npz]}
DATA=${2:-.device/pointmaze-medium-navigate-task1.npz}
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The device tool returns at most a few files from OUT: every stage writes into WORK, and after each stage
# OUT gets the summaries plus one archive of everything (device_check.tgz, the checkpoint included).
WORK=$(mktemp -d)
pack() {
  cp -f "$WORK"/device_check.log "$WORK"/env.json "$WORK"/train_throughput.json "$WORK"/gpu_engine_latency.json \
    "$OUT"/ 2>/dev/null
  tar -czf "$OUT/device_check.tgz.tmp" -C "$WORK" . && mv "$OUT/device_check.tgz.tmp" "$OUT/device_check.tgz"
}
BUDGET=${DEVICE_CHECK_BUDGET_S:-500}
DEVICES=cuda STEPS=300 TICKS=300 TRAIN_CAP=300
if [ -n "${DEVICE_CHECK_DRY_RUN:-}" ]; then
  DEVICES=cpu STEPS=3 TICKS=3 TRAIN_CAP=20 BUDGET=${DEVICE_CHECK_BUDGET_S:-200}
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
log() { echo "[$(elapsed)s] $*" | tee -a "$WORK/device_check.log" >&2; }
stage() {  # stage NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  if [ "$limit" -lt 10 ]; then log "$name: skipped (budget spent)"; return; fi
  log "$name: start (timeout ${limit}s)"
  timeout -s INT -k 15 "$limit" "$@" >>"$WORK/$name.log" 2>&1
  log "$name: exit $?"
  pack
}

# Our package without pip: a shadow tree (evor_edge/{export,runtime,calibration} as pyproject maps them);
# pure-Python dependencies the machine lacks come from the carried wheels.
SHADOW=$(mktemp -d)
mkdir -p "$SHADOW/evor_edge"
for f in "$ROOT"/evor_edge/*; do ln -s "$f" "$SHADOW/evor_edge/"; done
for sub in export runtime calibration; do ln -s "$ROOT/$sub" "$SHADOW/evor_edge/$sub"; done
export PYTHONPATH="$SHADOW:$SHADOW/deps${PYTHONPATH:+:$PYTHONPATH}"
missing=$(python - <<'EOF'
import importlib.util
print(" ".join(m for m in ("click", "tqdm", "safetensors") if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  log "installing from .device/wheels: $missing"
  python -m pip install -q --no-index --find-links "$ROOT/.device/wheels" --target "$SHADOW/deps" $missing \
    >>"$WORK/setup.log" 2>&1 || log "pip install failed (see setup.log)"
fi
python - >"$WORK/env.json" 2>>"$WORK/setup.log" <<'EOF'
import json, os, platform, subprocess
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_count": os.cpu_count()}
try:
    import jax
    info["jax"] = jax.__version__
    info["jax_devices"] = [str(d) for d in jax.devices()]
except Exception as exc:  # noqa: BLE001
    info["jax"] = f"unavailable: {exc}"
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                         "--format=csv,noheader"], capture_output=True, text=True,
                                        timeout=20).stdout.strip()
except Exception as exc:  # noqa: BLE001
    info["nvidia_smi"] = f"unavailable: {exc}"
print(json.dumps(info, indent=2))
EOF
log "env: $(tr -d '\n' <"$WORK/env.json" | head -c 400)"

TT="python benchmarks/train_throughput.py --devices $DEVICES --steps $STEPS --repeats 3 --out $WORK/train_throughput.json"
stage throughput_torch 80 $TT --presets small,paper --agents evor,qc --modes eager,cuda-graph
stage throughput_jax 120 $TT --presets small,paper --agents evor,qc --modes jax --append

# Training gets what is left after keeping ~2 minutes for the later stages (at most TRAIN_CAP seconds).
train_s=$(( $(left) - 110 ))
[ "$train_s" -gt "$TRAIN_CAP" ] && train_s=$TRAIN_CAP
[ "$train_s" -lt 10 ] && train_s=10
stage train_paper $(( train_s + 40 )) python -m evor_edge.cli train --dataset "$DATA" --preset paper --agent evor \
  --device "$DEVICES" --time-limit "$train_s" --weights-only --set keep_checkpoints=1 --set checkpoint_every=50000 \
  --out "$WORK/run-evor-paper" --json
[ -f "$WORK/train_paper.log" ] && grep -v '^\s*$' "$WORK/train_paper.log" | tail -n 30 >"$WORK/train_summary.txt"

stage engine_latency 40 python benchmarks/gpu_engine_latency.py --device "$DEVICES" --checkpoint "$WORK/run-evor-paper" \
  --ticks "$TICKS" --out "$WORK/gpu_engine_latency.json"
stage throughput_compile $(( $(left) - 5 )) $TT --presets paper,small --agents evor,qc \
  --modes compile,compiled-cuda-graph --append
log "done in $(elapsed)s"
ls -la "$WORK" >>"$WORK/device_check.log"
pack
