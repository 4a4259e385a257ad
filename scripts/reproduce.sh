#!/usr/bin/env bash
# Rerun the pointmaze-medium reproduction of docs/results.md from scratch:
# one locally generated dataset, EVOR and QC-1 trained by the same command on it (small preset),
# exported, and evaluated closed loop through the engine (what the robot runs), plus the N_pi sweep and
# EVOR on cube-double-play task 2.
#
#   scripts/reproduce.sh [OUT_DIR] [SEEDS] [EPISODES]      (defaults: repro 1 50)
#
# CPU cost on a 2-core machine: ~8-25 min of training per run (EVOR faster than QC-1); evaluation from
# seconds (QC-1) to ~25 min (EVOR at N_pi 32 / N 50 when episodes run to the time limit), ~6 h in all.
# Runs are resumable: re-running skips finished training and export.
set -euo pipefail
out=${1:-repro}
seeds=${2:-1}
episodes=${3:-50}
dataset="$out/data/pointmaze-medium-navigate-v0.npz"
mkdir -p "$out/data" "$out/results"

[ -f "$dataset" ] || evor-edge data generate pointmaze-medium-navigate-v0 --out "$dataset" --episodes 100 --json \
  > "$out/results/dataset.json"

for task in 1 2 3 4 5; do
  env="pointmaze-medium-navigate-singletask-task$task-v0"
  for agent in evor qc; do
    for seed in $(seq 0 $((seeds - 1))); do
      run="$out/runs/${agent}_t${task}_s${seed}"
      engine="$out/engines/${agent}_t${task}_s${seed}"
      if [ -f "$run/checkpoints/LATEST" ]; then resume=--resume; else resume=; fi
      evor-edge train --env "$env" --dataset "$dataset" --agent "$agent" --preset small --seed "$seed" \
        --threads 1 --out "$run" $resume --json > "$out/results/train_${agent}_t${task}_s${seed}.json"
      [ -f "$engine/manifest.json" ] || evor-edge export "$run" --out "$engine" --json > /dev/null
      evor-edge eval "$engine" --env "$env" --episodes "$episodes" --seed 0 --threads 1 --json \
        > "$out/results/eval_${agent}_t${task}_s${seed}.json"
    done
  done
done

evor-edge eval "$out/engines/evor_t1_s0" --env pointmaze-medium-navigate-singletask-task1-v0 \
  --episodes "$episodes" --seed 0 --sweep num_candidates=1,2,4,8,16,32 --threads 1 \
  --plot "$out/results/scaling_num_candidates.png" --json > "$out/results/sweep_num_candidates.json"
# cube-double-play task 2 (EVOR; docs/results.md): 200-episode play dataset, same preset and budget
cube="$out/data/cube-double-play-v0.npz"
cube_env=cube-double-play-singletask-task2-v0
[ -f "$cube" ] || evor-edge data generate cube-double-play-v0 --out "$cube" --episodes 200 --json \
  > "$out/results/dataset_cube.json"
if [ -f "$out/runs/evor_cube_t2/checkpoints/LATEST" ]; then resume=--resume; else resume=; fi
evor-edge train --env "$cube_env" --dataset "$cube" --agent evor --preset small --threads 1 \
  --out "$out/runs/evor_cube_t2" $resume --json > "$out/results/train_evor_cube_t2.json"
[ -f "$out/engines/evor_cube_t2/manifest.json" ] || evor-edge export "$out/runs/evor_cube_t2" \
  --out "$out/engines/evor_cube_t2" --json > /dev/null
evor-edge eval "$out/engines/evor_cube_t2" --env "$cube_env" --episodes "$episodes" --seed 0 --threads 1 --json \
  > "$out/results/eval_evor_cube_t2.json"
echo "results in $out/results"
