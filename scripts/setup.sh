#!/usr/bin/env bash
# Set up .venv once (idempotent). Torch: if the chosen Python already imports torch (e.g. a CUDA
# build you installed), it is kept; otherwise the CPU build torch==2.13.0 is installed.
# Override the interpreter with PYTHON=..., skip the venv with SFTRL_NO_VENV=1.
set -euo pipefail
cd "$(dirname "$0")/.."
# The explorer's browser tests (tests/test_site.py) drive Debian's chromium: no browser download.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${SFTRL_CHROMIUM:-}" ] && [ "${SFTRL_NO_BROWSER:-0}" != "1" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "sftrl setup: installing chromium (Debian package) for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null \
      || echo "sftrl setup: note: apt-get could not install chromium; tests/test_site.py will fail (SFTRL_NO_BROWSER=1 skips it)"
  else
    echo "sftrl setup: note: no chromium, and no apt-get as root to install it: install Chromium, or point"
    echo "  SFTRL_CHROMIUM at one, for tests/test_site.py; or set SFTRL_NO_BROWSER=1 to skip those tests"
  fi
fi
PY=${PYTHON:-python3}
if [ "${SFTRL_NO_VENV:-0}" != "1" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  PY=.venv/bin/python
fi
mkdir -p .venv
stamp=.venv/.sftrl-setup
if [ "${SFTRL_NO_VENV:-0}" = "1" ]; then stamp=.venv/.sftrl-setup-system; fi
want="$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "sftrl setup: installing torch==2.13.0 (CPU build)"
  "$PY" -m pip install -q "torch==2.13.0"
fi
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
echo "sftrl setup: installing sftrl and its dependencies (torch $TORCH_VERSION kept)"
"$PY" -m pip install -q -e ".[dev]" -c constraints.txt -c <(echo "torch==$TORCH_VERSION")
echo "$want" > "$stamp"
