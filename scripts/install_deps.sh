#!/usr/bin/env bash
# Installs Lopper's build dependencies from Debian's packages, only those missing.
# Needs root (or sudo). The CUDA toolkit is optional and is not installed here.
set -euo pipefail

pkgs=(build-essential cmake ninja-build libdnnl-dev nlohmann-json3-dev libsentencepiece-dev
      libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev libopenmpi-dev openmpi-bin
      libutf8proc-dev python3 python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
