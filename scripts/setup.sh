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
  echo "[setup] installing requirements.txt (torch comes from the local wheel cache where there is one)"
  .venv/bin/pip install --disable-pip-version-check -q -r requirements.txt
  .venv/bin/pip install --disable-pip-version-check -q --no-deps -e .
  echo "$want" > .venv/.ntaylor-installed
fi
.venv/bin/python -m ntaylor_lib data
