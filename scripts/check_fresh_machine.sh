#!/usr/bin/env bash
# Runs the README's two commands (scripts/quickstart.sh, then scripts/test.sh) inside a
# pristine minimal Debian 12 root, so that a package installed by hand on this machine cannot
# hide a missing install step. Not part of CI: it takes about as long as both commands on a
# new machine. Run it before closing any change to dependencies or scripts.
#
#   scripts/check_fresh_machine.sh [--only quickstart|test] [WORKDIR]   (default /var/tmp/lopper-fresh)
#
# What it does: debootstraps a minbase bookworm once and keeps it as a tarball (every run
# unpacks it afresh: a root reused after an install would hide missing packages again),
# clones HEAD of this repository into it (committed work only) with shared/ beside it,
# copies in this machine's package-client settings (resolv.conf, apt sources, pip config and
# this machine's CA bundle under a path of its own), mounts /proc and /sys and runs each command under
# chroot with a clean environment, stopping at the first failure. Phase times go to stdout
# and to WORKDIR/logs/phases.txt; each phase's full output to WORKDIR/logs/PHASE.log.
# Needs root (debootstrap, chroot, mount).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
only=""
if [ "${1:-}" = "--only" ]; then only=$2; shift 2; fi
work=${1:-/var/tmp/lopper-fresh}
[ "$(id -u)" -eq 0 ] || { echo "check_fresh_machine.sh: needs root (debootstrap, chroot, mount)" >&2; exit 1; }
[ -d "$repo/../shared" ] || { echo "check_fresh_machine.sh: no shared/ beside $repo" >&2; exit 1; }
mkdir -p "$work/logs"
: > "$work/logs/phases.txt"

t0=$SECONDS
record() {  # record NAME SECONDS STATUS
  printf '%-28s %4dm%02ds  %s\n' "$1" $(( $2 / 60 )) $(( $2 % 60 )) "$3" | tee -a "$work/logs/phases.txt"
}

# 1. The base root, made once.
tarball="$work/bookworm-minbase.tar"
if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
  # (grep fails for a list file that does not exist, e.g. no /etc/apt/sources.list on a
  # deb822-only machine: that must not stop the script under pipefail)
  mirror=$({ grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
             2>/dev/null || true; } | grep -v security | head -1 | awk '{print $2}')
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "== debootstrap --variant=minbase bookworm from $mirror"
  s=$SECONDS
  rm -rf "$work/base"
  debootstrap --variant=minbase bookworm "$work/base" "$mirror" > "$work/logs/debootstrap.log" 2>&1
  tar -C "$work/base" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
  rm -rf "$work/base"
  record debootstrap $(( SECONDS - s )) ok
fi

# 2. A pristine root from it, with a clean clone and shared/.
root="$work/root"
mounts=(proc sys)  # mounted into the root below
cleanup() { for m in "${mounts[@]}"; do umount -R "$root/$m" 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup
for m in "${mounts[@]}"; do  # never rm -rf through a mount of the host's /proc or /sys
  if mountpoint -q "$root/$m"; then echo "check_fresh_machine.sh: $root/$m is still mounted" >&2; exit 1; fi
done
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
git clone -q --no-hardlinks "$repo" "$root/work/main"
cp -a "$repo/../shared" "$root/work/shared"
echo "== root at $root with a clone of $(git -C "$repo" rev-parse --short HEAD)"

# 3. This machine's package-client settings.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp -a /etc/apt/sources.list.d/. "$root/etc/apt/sources.list.d/" 2>/dev/null || true
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$root/etc/apt/sources.list"
for f in /etc/apt/apt.conf.d/*; do  # proxies, snapshot mirrors: the Acquire settings only
  grep -q '^Acquire' "$f" 2>/dev/null && cp "$f" "$root/etc/apt/apt.conf.d/"
done
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
# The root's ca-certificates package regenerates /etc/ssl/certs: keep the host's bundle apart.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/lopper-host-ca.crt"
mount -t proc proc "$root/proc"
# /sys as on a real machine: the local Slurm's slurmd stops without /sys/fs/cgroup, and
# hwloc (Open MPI) reads the CPU topology there. A slave mount: nothing propagates back.
mount --rbind /sys "$root/sys"
mount --make-rslave "$root/sys"

# 4. The README's commands, each timed, stopping at the first failure.
run_phase() {  # run_phase NAME COMMAND...
  local name=$1; shift
  local s=$SECONDS status=ok
  echo "== $name: $*"
  if ! chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/lopper-host-ca.crt DEBIAN_FRONTEND=noninteractive CI=true \
        bash -c "cd /work/main && $*" > "$work/logs/$name.log" 2>&1; then
    status=FAILED
  fi
  grep -E '^== \[' "$work/logs/$name.log" | sed 's/^/   /' || true
  record "$name" $(( SECONDS - s )) $status
  if [ $status != ok ]; then
    echo "--- last lines of $work/logs/$name.log:"; tail -30 "$work/logs/$name.log"
    exit 1
  fi
}
if [ "$only" != test ]; then
  run_phase quickstart scripts/quickstart.sh
  grep -E 'accuracy|heads' "$work/logs/quickstart.log" | tail -6 | sed 's/^/   /' || true
fi
if [ "$only" != quickstart ]; then
  run_phase test scripts/test.sh
fi
record total $(( SECONDS - t0 )) ok
