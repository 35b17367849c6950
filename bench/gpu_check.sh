#!/usr/bin/env bash
# The GPU acceptance check (bench/gpu_check.py): one command on a CUDA machine, within 8 minutes on one
# GPU, one line per check and a summary. Uses $PYTHON, else the project's .venv, else the python3 on PATH
# (a GPU machine without network brings its own PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONUNBUFFERED=1
exec timeout 470 "$PY" bench/gpu_check.py "$@"
