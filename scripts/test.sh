#!/usr/bin/env bash
# Set up, then lint (ruff, configured in pyproject.toml) and run the test suite on CPU: unit
# and end-to-end tests (as root, Debian's chromium is installed for the HTML report's test),
# then the tests against a real one-node SLURM cluster on localhost (needs root to install
# and start it; skipped otherwise with a message). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# before the tests, which take minutes: a finding, or a file ruff would format, fails the
# run at once
ruff check folk tests workflow/scripts scripts
ruff format --check folk tests workflow/scripts scripts
# tests/test_html_report.py opens Snakemake's HTML report in headless Chromium (skipped,
# saying so, where there is none)
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test: installing Debian's chromium for tests/test_html_report.py"
  export DEBIAN_FRONTEND=noninteractive
  pkgs="chromium fonts-liberation"
  { apt-get install -y -qq --no-install-recommends $pkgs \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $pkgs; }; } \
      >/dev/null 2>&1 || echo "test: apt-get could not install chromium"
fi
# the slowest tests listed at the end: CI has 30 minutes on 2 cores
python -m pytest -q -ra --durations=25 "$@"
if [ -f tests/slurm/run_slurm_tests.sh ]; then
  if [ "$(id -u)" = 0 ]; then
    bash tests/slurm/run_slurm_tests.sh --durations=10
  else
    echo "SLURM tests skipped: they install and start slurmctld/slurmd and need root"
  fi
fi
