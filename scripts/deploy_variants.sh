#!/usr/bin/env bash
# The product promise on the campaign's EVOR runs: the INT8 engine and the 50 Hz configuration that
# `bench --fit` picks, evaluated closed loop next to the FP32 paper configuration (same episode seeds 0..E-1).
#
#   scripts/deploy_variants.sh OUT_DIR SEED EPISODES fit    # bench --fit --hz 50 per engine (TIMING: run it
#                                                          # on a quiet machine; writes results/fit50hz_RUN.json)
#   scripts/deploy_variants.sh OUT_DIR SEED EPISODES eval   # INT8 calibration + both closed-loop evaluations
#
# Results: OUT_DIR/results/vareval_int8__RUN.json and vareval_fit50hz__RUN.json (collect_results.py reads
# them as the variants "int8" and "fit50hz" of RUN). Resumable: finished files are skipped.
set -euo pipefail
out=${1:?usage: deploy_variants.sh OUT_DIR SEED EPISODES fit|eval}
seed=${2:-0}
episodes=${3:-20}
stage=${4:-eval}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/campaign_lib.sh
. "$here/campaign_lib.sh"  # fast, evaluate
data="$out/data/pointmaze-medium-navigate-v0.npz"
for task in 1 2 3 4 5; do
  env="pointmaze-medium-navigate-singletask-task$task-v0"
  name="evor_${env%-v0}_s$seed"
  engine="$out/engines/$name"
  [ -f "$engine/manifest.json" ] || { echo "skip $name: no engine yet"; continue; }
  fit="$out/results/fit50hz_$name.json"
  if [ "$stage" = fit ]; then
    [ -s "$fit" ] || { evor-edge bench "$engine" --hz 50 --fit --no-frontier --dataset "$data" --ticks 300 --json \
      >"$fit.tmp" && mv "$fit.tmp" "$fit"; }
    continue
  fi
  int8="$out/engines/int8_$name" result="$out/results/vareval_int8__$name.json"
  # calibration reads the node membership that engines record since format 2: export the run again for it
  # (the same FP32 computation as the evaluated engine; the eval of the FP32 engine is not repeated)
  fresh="$out/engines/fresh_$name"
  [ -f "$fresh/manifest.json" ] || fast evor-edge export "$out/runs/$name" --out "$fresh" >"$out/logs/export_fresh_$name.log" 2>&1
  [ -f "$int8/manifest.json" ] || fast evor-edge calibrate "$fresh" --dataset "$data" --precision int8 \
    --out "$int8" --task "$env" >"$out/logs/calibrate_$name.log" 2>&1
  evaluate "$int8" "$env" "$episodes" "$result" "$out/logs/vareval_int8__$name.log" || echo "failed: $result" >&2
  result="$out/results/vareval_fit50hz__$name.json"
  if [ -s "$fit" ] && [ ! -s "$result" ]; then
    flags=$(python3 - "$fit" <<'PY'
import json, sys
fit = json.load(open(sys.argv[1]))["fit"]
flags = [f"--num-candidates {fit['num_candidates']}", f"--num-rtg {fit['num_rtg']}"]
if fit.get("rtg_top_k"):
    flags.append(f"--rtg-top-k {fit['rtg_top_k']}")
if fit.get("common_rtg_noise"):
    flags.append("--crn")
print(" ".join(flags))
PY
)
    # shellcheck disable=SC2086
    evaluate "$engine" "$env" "$episodes" "$result" "$out/logs/vareval_fit50hz__$name.log" $flags \
      || echo "failed: $result" >&2
  fi
done
