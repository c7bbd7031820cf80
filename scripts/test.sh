#!/usr/bin/env bash
# Run the test suite: set up (packages, data), make sure headless Chromium is present for
# the site check, then pytest. Extra arguments go to pytest.
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
exec .venv/bin/python -m pytest -q "$@"
