#!/usr/bin/env bash
# Build the whole book: set up (packages, data), execute every chapter with papermill at
# a profile (default cpu), and build the HTML into _build/html.
#   bash scripts/book.sh [--profile smoke|cpu|paper] [--set KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m ntaylor_lib book "$@"
