#!/usr/bin/env bash
# The EVOR vs QC-1 campaign of docs/results.md, on data made with OGBench's official recipes:
# each agent trained by the same command on the same data (CPU-budget `small` preset), exported, and
# evaluated closed loop through the engine with the torch-free runtime (what the robot runs).
#
#   scripts/reproduce.sh [OUT_DIR] [SEEDS] [EPISODES] [AGENTS] [STAGES]
#   defaults:            repro      3       50         "evor qc" "pointmaze cube scene"
#
# Run one process per agent to use two cores (`scripts/reproduce.sh repro 3 50 evor & scripts/reproduce.sh
# repro 3 50 qc`); dataset generation is serialised with a lock. Everything is resumable: finished
# evaluations are skipped, training resumes from its last checkpoint, exported engines are reused.
# Evaluation episode i uses seed i (fixed before training). Seeds run outermost, so seed 0 of every task
# finishes first. `scripts/collect_results.py OUT_DIR/results --out docs/results.json` builds the table.
# CPU cost (2-core AMD EPYC, MKL AVX-512 shim): pointmaze data ~1.5 min; cube-double / scene data ~30 min
# each; training 4-6 min (EVOR) / ~15 min (QC-1) per run at 1 thread; evaluation up to ~25 min per EVOR run
# at N_pi 32 / N 50 (50 episodes), about a minute for QC-1.
set -euo pipefail
out=${1:-repro}
seeds=${2:-3}
episodes=${3:-50}
agents=${4:-"evor qc"}
stages=${5:-"pointmaze cube scene"}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/data" "$out/results" "$out/logs"
# shellcheck source=scripts/campaign_lib.sh
. "$here/campaign_lib.sh"  # fast, evaluate

dataset_for() {  # dataset_for NAME -> path (generated once, under a per-dataset lock, with the official recipe)
  local name=$1 path="$out/data/$1.npz"
  if [ ! -f "$path" ]; then  # an existing dataset never waits behind another one's generation
    (
      flock 9
      [ -f "$path" ] || fast evor-edge data generate "$name" --out "$path" --json >"$out/results/dataset_$name.json"
    ) 9>"$out/data/.$name.lock"
  fi
  echo "$path"
}

# PM_TASKS="5 4 3 2 1" (environment): the pointmaze task order, e.g. for a second lane of the same agent that
# meets the first in the middle (a run in training elsewhere is skipped: evor-edge locks run directories).
# VARIANTS="NAME:EVAL FLAGS;..." (environment): each EVOR engine is also evaluated with those runtime flags
# (same episodes and seeds) into results/vareval_NAME__RUN.json, e.g. VARIANTS="tau_r_inf:--tau-r inf".
variants() {  # variants ENV AGENT NAME
  local env=$1 agent=$2 name=$3 spec vname flags file
  [ "$agent" = evor ] && [ -n "${VARIANTS:-}" ] || return 0
  IFS=';' read -ra specs <<<"$VARIANTS"
  for spec in "${specs[@]}"; do
    vname=${spec%%:*} flags=${spec#*:} file="$out/results/vareval_${vname}__$name.json"
    # shellcheck disable=SC2086
    evaluate "$out/engines/$name" "$env" "$episodes" "$file" "$out/logs/vareval_${vname}__$name.log" $flags
  done
}

one_run() {  # one_run DATASET_NAME TASK AGENT SEED
  local data env=$2 agent=$3 seed=$4
  local name="${agent}_${env%-v0}_s${seed}"
  local result="$out/results/eval_$name.json" run="$out/runs/$name" engine="$out/engines/$name"
  if [ -s "$result" ]; then variants "$env" "$agent" "$name"; return 0; fi
  data=$(dataset_for "$1")
  local resume=
  [ -f "$run/config.json" ] && resume=--resume  # also a run killed before its first checkpoint
  local log="$out/logs/train_$name.log"
  if ! fast evor-edge train --env "$env" --dataset "$data" --agent "$agent" --preset small --seed "$seed" --threads 1 \
    --out "$run" $resume --json >"$out/results/train_$name.json.tmp" 2>"$log"; then
    # another lane holds this run (evor-edge's run-directory lock): it trains and evaluates it; go on
    if grep -q "being trained by another process" "$log"; then echo "skip $name: another lane trains it" >&2; return 0; fi
    return 1
  fi
  mv "$out/results/train_$name.json.tmp" "$out/results/train_$name.json"
  [ -f "$engine/manifest.json" ] || fast evor-edge export "$run" --out "$engine" --json >/dev/null 2>>"$log"
  evaluate "$engine" "$env" "$episodes" "$result" "$out/logs/eval_$name.log"
  variants "$env" "$agent" "$name"
}

for seed in $(seq 0 $((seeds - 1))); do
  for stage in $stages; do
    case $stage in
      pointmaze) for task in ${PM_TASKS:-1 2 3 4 5}; do for agent in $agents; do
          one_run pointmaze-medium-navigate-v0 "pointmaze-medium-navigate-singletask-task$task-v0" "$agent" "$seed"
        done; done ;;
      cube) for agent in $agents; do
          one_run cube-double-play-v0 cube-double-play-singletask-task2-v0 "$agent" "$seed"
        done ;;
      scene) for agent in $agents; do
          one_run scene-play-v0 scene-play-singletask-task2-v0 "$agent" "$seed"
        done ;;
    esac
  done
done
python "$here/collect_results.py" "$out/results" --out "$out/results.json"
echo "results in $out/results.json"
