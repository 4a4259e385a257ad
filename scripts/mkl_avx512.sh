#!/usr/bin/env bash
# Run a command with MKL's AVX-512 GEMM kernels on an AMD CPU that has AVX-512.
#
#   scripts/mkl_avx512.sh evor-edge train ...
#
# PyTorch's CPU matmuls go to Intel MKL, which takes its AVX2 code path on non-Intel CPUs. On this
# project's AMD EPYC machines (AVX-512) that halves float32 GEMM throughput: 2048^2 GEMM, 2 threads,
# 188 -> 413 GFLOP/s with this shim; `small` EVOR training 68 -> 104 steps/s, `paper` 16 -> 28 steps/s
# (docs/performance.md). The shim is the widely used one-function library that makes MKL's CPU check
# answer "Intel" (mkl_serv_intel_cpu_true); MKL's AVX-512 kernels then run as on Intel. It changes
# rounding only (results agree to float32 tolerance). Built once with the system C compiler into
# ~/.cache/evor-edge; on Intel CPUs, CPUs without AVX-512, or without a compiler, the command runs unchanged.
set -euo pipefail
cache=${XDG_CACHE_HOME:-$HOME/.cache}/evor-edge
lib=$cache/libmkl_amd_avx512.so
if grep -q '^vendor_id.*AuthenticAMD' /proc/cpuinfo 2>/dev/null && grep -qw avx512f /proc/cpuinfo; then
  if [ ! -f "$lib" ] && command -v cc >/dev/null; then
    mkdir -p "$cache"
    printf 'int mkl_serv_intel_cpu_true(void) { return 1; }\n' | cc -shared -fPIC -x c -o "$lib.tmp" - \
      && mv "$lib.tmp" "$lib"
  fi
  [ -f "$lib" ] && export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
fi
exec "$@"
