#!/usr/bin/env bash
# Set up, then lint (ruff, configured in pyproject.toml) and run the test suite on CPU: unit
# and end-to-end tests, then the tests against a real one-node SLURM cluster on localhost
# (needs root to install and start it; skipped otherwise with a message). Extra arguments go
# to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# before the tests, which take minutes: a finding, or a file ruff would format, fails the
# run at once
ruff check folk tests workflow/scripts scripts
ruff format --check folk tests workflow/scripts scripts
python -m pytest -q -ra "$@"
if [ -f tests/slurm/run_slurm_tests.sh ]; then
  if [ "$(id -u)" = 0 ]; then
    bash tests/slurm/run_slurm_tests.sh
  else
    echo "SLURM tests skipped: they install and start slurmctld/slurmd and need root"
  fi
fi
