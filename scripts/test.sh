#!/usr/bin/env bash
# Run the checks: set up (packages, data), make sure headless Chromium is present for the
# site check, lint with ruff (configured in pyproject.toml), then pytest. Extra arguments go
# to pytest.
#   bash scripts/test.sh [-k EXPR] [-x] ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test] installing Debian's chromium for the site check"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[test] chromium is missing: run 'sudo apt-get install chromium' for the site check" >&2
  fi
fi
echo "[test] ruff check ."
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
