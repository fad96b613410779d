#!/usr/bin/env bash
# One command from a fresh clone to a working environment: a virtual environment in .venv,
# the CPU build of torch first (an unpinned torch would pull a multi-GB CUDA build), then
# lmprobe itself (editable) with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "ready: . .venv/bin/activate"
