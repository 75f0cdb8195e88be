#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (Debian's slurmctld, slurmd, munge), for the SLURM pipeline test and
# for trying profiles/slurm without a cluster. Needs root (the daemons run as root).
#   bash scripts/slurm_local.sh install        install the daemons if missing (scripts/test-packages.txt)
#   bash scripts/slurm_local.sh start DIR      write DIR/slurm.conf, start munged/slurmctld/slurmd, wait for the node
#   bash scripts/slurm_local.sh stop DIR       stop the daemons started with DIR
# Clients (sbatch, squeue, snakemake --executor slurm) find the cluster through SLURM_CONF=DIR/slurm.conf.
# The partition is named "cpu" as in profiles/slurm. No accounting storage: status comes from squeue, which keeps
# finished jobs for MinJobAge seconds (snakemake ... --slurm-status-command squeue).
set -euo pipefail

cmd=${1:-}
dir=${2:-}

die() { echo "slurm_local: $*" >&2; exit 1; }

case "$cmd" in
install)
  bash "$(dirname "${BASH_SOURCE[0]}")/setup.sh" --test-packages   # the daemons are in scripts/test-packages.txt
  ;;
start)
  [[ -n "$dir" ]] || die "usage: $0 start DIR"
  [[ $(id -u) -eq 0 ]] || die "the daemons need root (uid $(id -u)); run as root or use a real cluster"
  for bin in munged slurmctld slurmd sinfo; do
    command -v "$bin" >/dev/null || die "$bin not found: run 'bash scripts/slurm_local.sh install'"
  done
  mkdir -p "$dir"/{state,spool,munge}
  dir=$(cd "$dir" && pwd)
  host=$(hostname -s)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cpus=$(nproc)
  cat > "$dir/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SlurmctldParameters=enable_configless
MinJobAge=86400
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  [[ -f /etc/munge/munge.key ]] || die "/etc/munge/munge.key missing: reinstall munge (apt-get install --reinstall munge)"
  # munged on its default socket: configless slurmd authenticates before it has a config to name another one
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge
    munged --force --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
      --seed-file="$dir/munge/munged.seed" || die "munged did not start: $(tail -3 "$dir/munge/munged.log" 2>/dev/null)"
  fi
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$SLURM_CONF" || die "slurmctld did not start: $(tail -5 "$dir/slurmctld.log" 2>/dev/null)"
  # configless: slurmd fetches the config and caches it where srun looks without SLURM_CONF (/run/slurm/conf),
  # which matters because snakemake's slurm-jobstep plugin drops SLURM_* variables before its srun.
  slurmd --conf-server "$host" || die "slurmd did not start: $(tail -5 "$dir/slurmd.log" 2>/dev/null)"
  for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
    [[ "$state" == idle* || "$state" == mixed* ]] && { echo "slurm_local: node $host $state, SLURM_CONF=$SLURM_CONF"; exit 0; }
    sleep 0.5
  done
  die "node not idle after 30 s (state '${state:-none}'); slurmctld.log: $(tail -3 "$dir/slurmctld.log" 2>/dev/null);" \
      "slurmd.log: $(tail -3 "$dir/slurmd.log" 2>/dev/null)"
  ;;
stop)
  [[ -n "$dir" ]] || die "usage: $0 stop DIR"
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    for _ in $(seq 20); do
      [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null || break
      sleep 0.25
    done
  done
  # slurmd's cached copy of our config outlives the daemons; with it every SLURM client (and snakemake, whose slurm
  # plugin runs `scontrol show config` at import) retries the stopped controller for ~9 s
  cached=/run/slurm/conf/slurm.conf
  if [[ -f "$cached" && -f "$dir/slurm.conf" ]] && cmp -s "$cached" "$dir/slurm.conf"; then rm -f "$cached"; fi
  ;;
*)
  die "usage: $0 install | start DIR | stop DIR"
  ;;
esac
