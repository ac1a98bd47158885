#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for tests that launch through Slurm:
#   tests/slurm/local_slurm.sh COMMAND [ARGS...]
# starts munged, slurmctld and slurmd in a temporary folder (free ports, no systemd), runs
# COMMAND with SLURM_CONF pointing at it (srun, sbatch, squeue work as on a cluster),
# cancels what is left of its jobs, stops the daemons by pid, removes the folder, and exits
# with COMMAND's status. Exits 77 (ctest's skip) where Slurm is not installed
# (scripts/install_deps.sh installs it: slurmctld slurmd slurm-client munge).
# LOPPER_KEEP_SLURM=1 keeps the folder (daemon logs, slurm.conf) for a look afterwards.
set -uo pipefail

for tool in munged slurmctld slurmd srun sbatch scontrol; do
  command -v "$tool" >/dev/null || { echo "local_slurm.sh: '$tool' not found: Slurm is not installed (scripts/install_deps.sh)" >&2; exit 77; }
done
[ $# -gt 0 ] || { echo "usage: local_slurm.sh COMMAND [ARGS...]" >&2; exit 2; }

dir=$(mktemp -d /tmp/lopper_slurm.XXXXXX)
chmod 755 "$dir"  # munged's socket folder must be enterable by everyone
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop() {
  if [ -f "$dir/slurm.conf" ]; then
    SLURM_CONF="$dir/slurm.conf" scancel --quiet --user="$(id -un)" 2>/dev/null  # stopping the daemons ends no job
    sleep 0.5
  fi
  for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
  done
  for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do  # up to 5 s each, then for sure
    for _ in $(seq 50); do [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null || break; sleep 0.1; done
    [ -f "$pid" ] && kill -9 "$(cat "$pid")" 2>/dev/null
  done
  if [ "${LOPPER_KEEP_SLURM:-0}" = 1 ]; then echo "local_slurm.sh: kept $dir" >&2; else rm -rf "$dir"; fi
}
trap stop EXIT
fail() { echo "local_slurm.sh: $*" >&2; for f in "$dir"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done; exit 1; }

# munge: a key of our own and a socket in the folder; --force because we may be root.
head -c 1024 /dev/urandom > "$dir/munge.key"
chmod 400 "$dir/munge.key"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
  --log-file="$dir/munged.log" --seed-file="$dir/munge.seed" || fail "munged did not start"

host=$(hostname -s)
node=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/")
user=$(id -un)
cat > "$dir/slurm.conf" <<CONF
ClusterName=lopper-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
for _ in $(seq 150); do  # up to 15 s for the node to come up
  state=$(sinfo -h -o %t 2>/dev/null | head -1)
  [ "$state" = idle ] && break
  sleep 0.1
done
[ "$state" = idle ] || fail "the node did not become idle (state '$state')"

"$@"
status=$?
exit $status
