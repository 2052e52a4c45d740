#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite plus the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
"$PY" -m ruff check .
# Two workers (one per core on CI), one test file per worker so module-scoped fixtures are built
# once; SFTRL_TEST_WORKERS=0 runs in one process. Tests pin torch to one thread per process.
"$PY" -m pytest -n "${SFTRL_TEST_WORKERS:-2}" --dist loadfile "$@"
