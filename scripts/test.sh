#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite plus the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
"$PY" -m ruff check .
"$PY" -m pytest "$@"
