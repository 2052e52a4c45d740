# Sourced by demo.sh and test.sh: set up once (idempotent), then PY is the interpreter to use.
# SFTRL_NO_VENV=1 installs into the Python named by PYTHON (default python3) instead of .venv/,
# so a CUDA build of torch already installed there is kept.
bash scripts/setup.sh
if [ "${SFTRL_NO_VENV:-0}" = "1" ]; then PY=${PYTHON:-python3}; else PY=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
