#!/usr/bin/env bash
# The GPU machine's side of scripts/gpu_bundle.sh, run from the checkout's root there:
# unpacks .device/bundle.tar.xz into /tmp/lopper (if carried), keeps a carried model part in
# /tmp/lopper (the machine keeps /tmp between calls while it is warm), puts the model
# together once both parts are there, and links the paths the build expects:
#   /work/main -> this checkout, /work/shared -> the bundled data, build-h100 -> the build.
# Writes /tmp/lopper/env.sh (LD_LIBRARY_PATH with the bundled and CUDA's libraries): source it.
set -euo pipefail
root="$PWD"
mkdir -p /tmp/lopper
if [ -f .device/bundle.tar.xz ]; then
  tar xJf .device/bundle.tar.xz -C /tmp/lopper
fi
for p in model.part1 model.part2 model.sha256; do
  [ -f ".device/$p" ] && cp ".device/$p" /tmp/lopper/
done
[ -d /tmp/lopper/build-h100 ] || { echo "no bundle in /tmp/lopper: carry .device/bundle.tar.xz" >&2; exit 1; }
mkdir -p /work
[ -e /work/main ] || ln -s "$root" /work/main
# The tests name ../shared beside the checkout both through /work/main and through its real path.
[ -e /work/shared ] || ln -s /tmp/lopper/shared /work/shared
[ -e "$(dirname "$(pwd -P)")/shared" ] || ln -s /tmp/lopper/shared "$(dirname "$(pwd -P)")/shared"
[ "$(cd /work/main && pwd -P)" = "$(pwd -P)" ] || { echo "/work/main is not this checkout" >&2; exit 1; }
ln -sfn /tmp/lopper/build-h100 build-h100
mkdir -p models/all-MiniLM-L6-v2
cp /tmp/lopper/model/* models/all-MiniLM-L6-v2/
if [ -f /tmp/lopper/model.part1 ] && [ -f /tmp/lopper/model.part2 ]; then
  cat /tmp/lopper/model.part1 /tmp/lopper/model.part2 >models/all-MiniLM-L6-v2/model.safetensors
  echo "$(cat /tmp/lopper/model.sha256)  models/all-MiniLM-L6-v2/model.safetensors" | sha256sum -c -
fi
# CUDA's libraries: the toolkit's, else the ones PyTorch's wheels ship.
cuda_libs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib \
         $(python3 -c 'import nvidia, os; [print(os.path.join(p, d, "lib")) for p in nvidia.__path__ for d in os.listdir(p)]' 2>/dev/null); do
  [ -d "$d" ] && ls "$d" | grep -q '^libcu' && cuda_libs="$cuda_libs:$d"
done
echo "export LD_LIBRARY_PATH=/tmp/lopper/lib$cuda_libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" >/tmp/lopper/env.sh
. /tmp/lopper/env.sh
ldd build-h100/apps/finetune_prune | grep 'not found' && { echo "missing libraries" >&2; exit 1; }
echo "unbundled: $(ls /tmp/lopper/build-h100/tests | grep -c '^test_') test binaries; model: $(ls -la models/all-MiniLM-L6-v2/model.safetensors 2>/dev/null | awk '{print $5}')"
