# Shared by scripts/reproduce.sh and scripts/deploy_variants.sh (sourced, not run): one closed-loop
# evaluation protocol for every result file of the campaign.
# shellcheck shell=bash

campaign_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

fast() {  # fast COMMAND...: run through the MKL AVX-512 shim (docs/performance.md)
  "$campaign_here/mkl_avx512.sh" "$@"
}

evaluate() {  # evaluate ENGINE_DIR TASK EPISODES RESULT.json LOG [EVAL FLAGS...]
  # Closed loop through the runtime, episode seeds 0..EPISODES-1 (fixed before training), one thread;
  # skipped when RESULT exists; written atomically (RESULT.tmp.PID, then renamed).
  local engine=$1 env=$2 episodes=$3 result=$4 log=$5
  shift 5
  [ -s "$result" ] && return 0
  fast evor-edge eval "$engine" --env "$env" --episodes "$episodes" --seed 0 --threads 1 "$@" --json \
    >"$result.tmp.$$" 2>"$log" && mv "$result.tmp.$$" "$result"  # per-process temp: two lanes may meet
}
