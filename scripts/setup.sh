#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with the pinned packages,
# this package installed in it (editable), and MNIST prepared and md5-checked.
# Re-running it does nothing new unless requirements.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.ntaylor-installed 2>/dev/null)" != "$want" ]; then
  # torch 2.14.1 from PyPI is its CUDA build: the environment takes about 6 GB.
  free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt 7000000 ]; then
    echo "[setup] warning: $((free_kb / 1024)) MB free here; the environment needs about 6 GB (torch's CUDA build)." >&2
    echo "[setup] if pip fails with 'No space left on device', free disk space and run this again." >&2
  fi
  echo "[setup] installing requirements.txt (torch comes from the local wheel cache where there is one)"
  .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt
  .venv/bin/pip install --disable-pip-version-check -q --no-deps -e .
  echo "$want" > .venv/.ntaylor-installed
fi
.venv/bin/python -m ntaylor_lib data
