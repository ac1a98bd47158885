#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs for a GPU machine that has CUDA, PyTorch and CMake
# but not Debian's packages (this workplace's lent GPU machines): a CUDA build for sm_90
# made here (build-h100), the shared libraries it loads that are not CUDA's or the C
# library's, the data and vocabulary it reads, and all-MiniLM-L6-v2 split in two parts
# (each call to such a machine carries at most 64 MiB). Writes .device/ (git-ignored):
#   bundle.tar.xz   build-h100 without objects, lib/, shared/, the model's small files
#   model.part1 model.part2
# On the GPU machine, from the checkout's root (paths are baked into the tests as /work/main):
#   tar xJf .device/bundle.tar.xz -C /tmp/lopper; cat part1 part2 > models/.../model.safetensors
#   see docs/benchmarks.md ("On a GPU") for the exact commands used.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
cmake -S . -B build-h100 -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPPER_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build build-h100 -j "$(nproc)"
scripts/fetch_model.sh
rm -rf .device/stage && mkdir -p .device/stage/lib .device/stage/shared/data .device/stage/model
# The build tree without objects and static libraries: binaries and ctest's files.
tar cf - --exclude='*.o' --exclude='*.a' --exclude=CMakeFiles --exclude='*.ninja' --exclude='.ninja_*' \
  --exclude=compile_commands.json build-h100 | tar xf - -C .device/stage
# Shared libraries outside CUDA and glibc that the binaries load. NCCL (218 MB, beside the
# toolkit's libraries in /usr/local/cuda/lib here) is left out like cuBLAS: the device
# machine's toolkit is expected to have it in the same place; where it does not, ldd on the
# device names it as missing.
for lib in $(ldd build-h100/apps/* build-h100/tests/test_* build-h100/bench/* 2>/dev/null |
             awk '/=> \// {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libgcc_s.so*|libstdc++.so*|libcu*|libnccl*|ld-linux*) ;;
    *) cp -L "$lib" .device/stage/lib/ ;;
  esac
done
cp -r ../shared/data/SST-2 ../shared/data/bert-base-uncased .device/stage/shared/data/
cp models/all-MiniLM-L6-v2/{config.json,vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} \
  .device/stage/model/
tar cJf .device/bundle.tar.xz -C .device/stage .
# The first part rides with the bundle, the second alone: each call under 64 MiB with the
# checkout (~2 MiB).
half=$(( 60 * 1024 * 1024 - $(stat -c %s .device/bundle.tar.xz) - 3 * 1024 * 1024 ))
head -c "$half" models/all-MiniLM-L6-v2/model.safetensors >.device/model.part1
tail -c +"$((half + 1))" models/all-MiniLM-L6-v2/model.safetensors >.device/model.part2
sha256sum models/all-MiniLM-L6-v2/model.safetensors | cut -d' ' -f1 >.device/model.sha256
rm -rf .device/stage
ls -la .device
