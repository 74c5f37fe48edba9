#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the tests in this directory.
#
#   bash tests/slurm/cluster.sh start    # install Debian's slurm if absent, start the daemons
#   bash tests/slurm/cluster.sh status   # sinfo + squeue
#   bash tests/slurm/cluster.sh stop     # stop what `start` started (pid files), restore slurm.conf
#
# Needs root (the daemons run as root, no systemd). State, spool, logs and pid files live
# in $FOLK_SLURM_STATE (default /tmp/folk-slurm); the configuration must be at
# /etc/slurm/slurm.conf because Snakemake's SLURM plugin drops SLURM_CONF before its inner
# srun. An existing slurm.conf (or gres.conf) that this script did not write is saved and
# put back by `stop`. `slurmctld -c` starts from an empty state: job ids restart at 1.
# The node declares $FOLK_SLURM_FAKE_GPUS (default 2) GPUs without devices, so that GPU
# requests are scheduled as on a GPU cluster while the jobs run on the CPU.
set -euo pipefail

STATE=${FOLK_SLURM_STATE:-/tmp/folk-slurm}
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
FAKE_GPUS=${FOLK_SLURM_FAKE_GPUS:-2}
MARK="# written by folk tests/slurm/cluster.sh"
MUNGE_RUN=/run/munge

log() { echo "cluster.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (starts munged, slurmctld and slurmd)"
}

install_packages() {
    local pkgs="slurmctld slurmd slurm-client munge"
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "slurm is not installed and apt-get is absent; install: $pkgs"
    log "installing $pkgs"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends $pkgs >"$STATE/apt.log" 2>&1; then
        apt-get update >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends $pkgs >>"$STATE/apt.log" 2>&1 \
            || die "apt-get install failed; see $STATE/apt.log"
    fi
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    # what slurmd sees, less a margin: a node claiming more memory than it has is drained
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    # GPUs without devices (empty files): SLURM schedules GPU requests (--gpus-per-node,
    # --gpus) as on a GPU cluster, while the jobs themselves run on the CPU
    local node_gres="" gres_line=""
    if [ "$FAKE_GPUS" -gt 0 ]; then
        for i in $(seq 0 $((FAKE_GPUS - 1))); do : >"$STATE/fake-gpu$i"; done
        node_gres="Gres=gpu:$FAKE_GPUS"
        gres_line="NodeName=localhost Name=gpu File=$STATE/fake-gpu[0-$((FAKE_GPUS - 1))]"
    fi
    mkdir -p /etc/slurm
    for f in "$CONF" "$GRES"; do
        if [ -f "$f" ] && ! grep -qF "$MARK" "$f"; then
            cp -p "$f" "$STATE/$(basename "$f").saved"
            log "saved the existing $f to $STATE/$(basename "$f").saved"
        fi
    done
    cat >"$CONF" <<EOF
$MARK (state in $STATE)
ClusterName=folktest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire + 1 s before it may start again (default 120)
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# seconds between SIGTERM and SIGKILL: time for a checkpoint at the next step boundary
KillWait=15
OverTimeLimit=0
# finished jobs stay visible to squeue (Snakemake's --slurm-status-command squeue)
MinJobAge=600
JobRequeue=1
SchedulerParameters=sched_interval=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb $node_gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
# a second name for the same node: jobs that ask for a partition can be told apart
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
    if [ -n "$gres_line" ]; then
        printf '%s\n%s\n' "$MARK" "$gres_line" >"$GRES"
    elif [ -f "$GRES" ] && grep -qF "$MARK" "$GRES"; then
        rm -f "$GRES"
    fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    if [ -S "$MUNGE_RUN/munge.socket.2" ] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running: using it"
        return
    fi
    [ -f /etc/munge/munge.key ] || die "/etc/munge/munge.key missing (reinstall munge)"
    mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge
    chmod 0755 "$MUNGE_RUN"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do
        [ -f "$MUNGE_RUN/munged.pid" ] && break
        sleep 0.1
    done
    cp "$MUNGE_RUN/munged.pid" "$STATE/munged.pid"  # ours: `stop` ends it
}

wait_idle() {
    local state=""
    for _ in $(seq 150); do
        state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*) return 0 ;;
        esac
        sleep 0.2
    done
    die "node not idle after 30 s (state '$state'); logs: $STATE/slurmctld.log $STATE/slurmd.log"
}

start() {
    need_root
    mkdir -p "$STATE"
    if pid_alive "$STATE/slurmctld.pid" || pid_alive "$STATE/slurmd.pid"; then
        die "a cluster from $STATE is already running: run '$0 stop' first"
    fi
    install_packages
    rm -rf "$STATE/ctld" "$STATE/spool"
    mkdir -p "$STATE/ctld" "$STATE/spool"
    write_conf
    start_munge
    slurmctld -c -f "$CONF"
    slurmd -N localhost -f "$CONF"
    wait_idle
    log "cluster up: partition debug, $(nproc) CPUs, state in $STATE"
}

stop_pidfile() {
    local name=$1 file=$STATE/$1.pid pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) ignored SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

stop() {
    need_root
    # jobs first, while slurmctld still answers: their processes must not outlive the test
    if pid_alive "$STATE/slurmctld.pid"; then
        scancel --full --quiet --user root 2>/dev/null || true
        for _ in $(seq 150); do  # up to 30 s: KillWait (15 s) and the clean-up after it
            [ -z "$(squeue -h -t running,completing 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    stop_pidfile slurmd
    stop_pidfile slurmctld
    stop_pidfile munged
    for f in "$CONF" "$GRES"; do
        if [ -f "$STATE/$(basename "$f").saved" ]; then
            mv "$STATE/$(basename "$f").saved" "$f"
        elif [ -f "$f" ] && grep -qF "$MARK" "$f"; then
            rm -f "$f"
        fi
    done
    log "stopped (logs kept in $STATE)"
}

status() {
    sinfo
    squeue -t all
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
