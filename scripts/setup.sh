#!/usr/bin/env bash
# Set up folk-repro on a fresh machine: a virtual environment in .venv with the folk package
# and pyproject.toml's dependencies (and its `test` extra) at constraints.txt's pins, and the
# Fashion-MNIST data package where the system's package manager allows. Idempotent: a second
# run with unchanged requirements only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp=.venv/.folk-setup
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ constraints.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing packages (torch is a 5 GB download the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  bash scripts/install-package.sh .venv/bin/python --with-deps
  touch "$stamp"
fi

fashion=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$fashion" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing the Debian package dataset-fashion-mnist"
    apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null \
      || echo "setup: apt-get could not install dataset-fashion-mnist"
  fi
  [ -f "$fashion" ] || echo "setup: Fashion-MNIST is not installed system-wide" \
    "(sudo apt-get install dataset-fashion-mnist); 'folk prepare' will try torchvision's download"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'))"
