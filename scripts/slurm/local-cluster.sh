#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (Debian's slurm-wlm and munge; no systemd),
# and the check that a grid submitted through it gives the records of a local run.
#
#   scripts/slurm/local-cluster.sh check   install if needed, start, run the check, stop
#   scripts/slurm/local-cluster.sh start   install if needed and start the daemons
#   scripts/slurm/local-cluster.sh stop    stop the daemons this script started
#
# The check: the four-cell fixture grid (crates/repro/tests/fixtures/grid) is run locally, then
# `repro table2 --emit-slurm` writes a 2-task job array plus a dependent `repro check`, which is
# submitted; every merged record must equal the local run's, cell by cell, except wall time,
# provenance and the checkpoint path (and so the content checksum). Installing needs root
# (apt-get); the rest runs as the invoking user. State, logs and records live under $DPZO_SLURM_DIR (default /tmp/dpzo-slurm).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
state=${DPZO_SLURM_DIR:-/tmp/dpzo-slurm}
conf=$state/slurm.conf
export SLURM_CONF=$conf
host=$(hostname -s)
log() { echo "slurm: $*"; }

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || { echo "slurm: slurm-wlm and munge are missing and installing them needs root" >&2; exit 2; }
  log "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$state/started-munged"
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "slurm: munged did not come up" >&2
  exit 3
}

write_conf() {
  mkdir -p "$state/ctld" "$state/spool"
  cat >"$conf" <<EOF
# Single-node cluster of scripts/slurm/local-cluster.sh.
ClusterName=dpzo
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  mkdir -p "$state"
  install
  start_munge
  if [ -f "$state/slurmctld.pid" ] && kill -0 "$(cat "$state/slurmctld.pid")" 2>/dev/null; then
    log "already running"
    return
  fi
  write_conf
  slurmctld -c -f "$conf"
  slurmd -c -f "$conf"
  for _ in $(seq 100); do
    if sinfo -h -o '%t' 2>/dev/null | grep -qx 'idle'; then
      log "cluster up: $(sinfo -h -o '%N %c CPUs %t')"
      return
    fi
    sleep 0.2
  done
  echo "slurm: the node did not become idle; see $state/slurmctld.log and $state/slurmd.log" >&2
  sinfo >&2 || true
  exit 4
}

stop() {
  for d in slurmd slurmctld; do
    if [ -f "$state/$d.pid" ]; then
      pid=$(cat "$state/$d.pid")
      kill "$pid" 2>/dev/null || true
      rm -f "$state/$d.pid"
    fi
  done
  if [ -f "$state/started-munged" ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$state/started-munged"
  fi
}

check() {
  local t0 repro fixture work array merge
  t0=$(date +%s)
  cargo build -q -p repro
  repro=$root/target/debug/repro
  fixture=$root/crates/repro/tests/fixtures/grid
  work=$state/check
  rm -rf "$work" && mkdir -p "$work"
  start
  trap stop EXIT
  # One thread per process: CPU reductions then give bit-identical results in both runs.
  export OMP_NUM_THREADS=1
  common=(table2 --preset tiny --experiments "$fixture" --device cpu)
  log "local run"
  "$repro" "${common[@]}" --out "$work/local" >"$work/local.log" 2>&1 || { cat "$work/local.log"; exit 5; }
  "$repro" "${common[@]}" --out "$work/slurm" --emit-slurm "$work/submit.sh" --slurm-tasks 2 \
    --slurm-arg=--cpus-per-task=1 --slurm-arg=--time=00:10:00
  submitted=$(bash "$work/submit.sh")
  echo "$submitted"
  array=$(echo "$submitted" | sed -n 's/^submitted array job \([0-9]*\) .*/\1/p')
  merge=$(echo "$submitted" | sed -n 's/.* merge job \([0-9]*\);.*/\1/p')
  [ -n "$array" ] && [ -n "$merge" ] || { echo "slurm: could not read the job ids" >&2; exit 6; }
  for _ in $(seq 600); do
    [ -z "$(squeue -h -j "$array,$merge" 2>/dev/null)" ] && break
    sleep 0.5
  done
  if [ -n "$(squeue -h -j "$array,$merge" 2>/dev/null)" ]; then
    squeue; echo "slurm: jobs still queued after 300 s" >&2; exit 7
  fi
  for f in "$work"/slurm/slurm/*.log; do echo "== $f"; tail -n 8 "$f"; done
  ntask=$(ls "$work"/slurm/slurm/dpzo-table2-tiny-"$array"_*.log 2>/dev/null | wc -l)
  [ "$ntask" = 2 ] || { echo "slurm: expected 2 array-task logs, found $ntask" >&2; exit 8; }
  [ -s "$work/slurm/table2/tiny/summary.csv" ] || { echo "slurm: the merge job wrote no summary" >&2; exit 9; }
  python3 - "$work/local/table2/tiny/runs" "$work/slurm/table2/tiny/runs" <<'EOF'
import json, os, sys
local, cluster = sys.argv[1], sys.argv[2]
def strip(record):
    # Timing, provenance and the checkpoint path differ between runs by design, and with them
    # the record's content checksum.
    for key in ("wall_secs", "provenance"):
        record.pop(key)
    record.pop("setup_secs", None)
    record.pop("content_sha256", None)
    record["trainer"].pop("provenance", None)
    record["trainer"].pop("seconds", None)
    record["trainer"]["config"].pop("checkpoint_dir", None)
    return record
names = sorted(f for f in os.listdir(local) if f.endswith(".json"))
other = sorted(f for f in os.listdir(cluster) if f.endswith(".json"))
assert names == other, f"cells differ: local {names}, slurm {other}"
assert len(names) == 4, names
for name in names:
    a = strip(json.load(open(os.path.join(local, name))))
    b = strip(json.load(open(os.path.join(cluster, name))))
    assert a == b, f"{name}: the Slurm record differs from the local one"
    print(f"slurm: {name} equals the local run's record")
EOF
  log "check passed in $(($(date +%s) - t0)) s"
}

case "${1:-}" in
  check) check ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 check|start|stop" >&2; exit 2 ;;
esac
