#!/usr/bin/env bash
# Inference-time scaling (paper Figure 3) on one campaign engine: closed-loop success at each N_pi, with the
# campaign's protocol (episode seeds 0..EPISODES-1 fixed before training, one thread, N and tau as exported).
#
#   scripts/scaling_sweep.sh OUT_DIR RUN_NAME EPISODES [N_PI VALUES...]
#   e.g. scripts/scaling_sweep.sh /work/repro evor_pointmaze-medium-navigate-singletask-task4_s1 20 1 2 4 8 16 64
#
# One result file per value, OUT_DIR/results/sweep/num_candidates=K__RUN_NAME.json, written atomically and
# skipped when present (resumable value by value, unlike one `eval --sweep` call that reports at the end).
# The campaign's own eval_RUN_NAME.json is the N_pi 32 point. `scripts/collect_sweep.py` makes the table/plot.
set -euo pipefail
out=${1:?usage: scaling_sweep.sh OUT_DIR RUN_NAME EPISODES [N_PI...]}
name=${2:?run name, e.g. evor_pointmaze-medium-navigate-singletask-task4_s1}
episodes=${3:-20}
shift 3
[ $# -gt 0 ] || set -- 1 2 4 8 16 64  # the N_pi values
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/campaign_lib.sh
. "$here/campaign_lib.sh"  # fast, evaluate
engine="$out/engines/$name"
[ -f "$engine/manifest.json" ] || { echo "no engine at $engine" >&2; exit 2; }
task=${name#*_}        # pointmaze-medium-navigate-singletask-task4_s1
env="${task%_s*}-v0"   # pointmaze-medium-navigate-singletask-task4-v0
mkdir -p "$out/results/sweep" "$out/logs"
for k in "$@"; do
  evaluate "$engine" "$env" "$episodes" "$out/results/sweep/num_candidates=${k}__$name.json" \
    "$out/logs/sweep_num_candidates=${k}__$name.log" --num-candidates "$k"
  echo "N_pi $k done" >&2
done
