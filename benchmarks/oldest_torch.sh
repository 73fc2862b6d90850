#!/usr/bin/env bash
# The test suite on the oldest torch the project supports (pyproject: torch>=2.4, torchvision>=0.19): a venv with
# torch 2.4.1 and torchvision 0.19.1 and every other package at the lock's version, then pytest with any
# arguments given (default: the whole suite but the GPU check, which reruns everything at toy sizes).
#
#   bash benchmarks/oldest_torch.sh [PYTEST ARGS]     # first run: about 3 GB into $OLDEST_VENV (a CUDA build)
#
# Its first run (2026-12-07) failed every training run: torchvision < 0.21 calls a custom v2 transform's
# _get_params/_transform, not make_params/transform (competition/data/colour.py now has both names).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${OLDEST_VENV:-/tmp/oldest-torch-venv}"
if [[ ! -f "$VENV/.complete" ]]; then
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    constraints="$VENV/constraints.txt"
    grep -v -E '^(torch|torchvision|triton|nvidia-|cuda-)' requirements.lock >"$constraints"
    echo "oldest_torch: installing torch 2.4.1 and the lock's other versions into $VENV (about 3 GB once)" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: torch==2.4.1 \
        torchvision==0.19.1
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" -e ".[dev]"
    touch "$VENV/.complete"
fi
"$VENV/bin/python" -c 'import torch, torchvision as tv; print(f"oldest_torch: torch {torch.__version__}, torchvision {tv.__version__}")'
if (($#)); then
    exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
fi
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    --deselect tests/test_gpu_check.py::test_gpu_check_runs_and_writes_one_table tests
