#!/usr/bin/env bash
# The tests that need a real SLURM cluster: starts a one-node cluster on localhost
# (cluster.sh, root, installs Debian's slurm if absent), runs tests/slurm under a time
# limit, and always stops the daemons it started, whatever happens.
#
#   bash tests/slurm/run_slurm_tests.sh [pytest args ...]
#
# FOLK_SLURM_TEST_TIMEOUT (seconds, default 720) bounds the pytest run; PYTHON picks the
# interpreter (default .venv/bin/python). Exit status: pytest's (124: timed out).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
LIMIT=${FOLK_SLURM_TEST_TIMEOUT:-720}
CLUSTER="bash $REPO/tests/slurm/cluster.sh"

cleanup() {
    $CLUSTER status >&2 || true
    $CLUSTER stop || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

$CLUSTER stop >/dev/null 2>&1 || true   # leftovers of an interrupted run
$CLUSTER start || exit 1

# the jobs run `folk` and `snakemake` from this venv (sbatch exports the environment)
export PATH="$(dirname "$PY"):$PATH"
export FOLK_SLURM_TESTS=1
timeout -k 20 "$LIMIT" "$PY" -m pytest tests/slurm -m slurm -v -p no:cacheprovider "$@"
