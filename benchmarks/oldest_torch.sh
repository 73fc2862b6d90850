#!/usr/bin/env bash
# The test suite on the oldest torch the project supports (pyproject: torch>=2.4, torchvision>=0.19): torch 2.4.1
# and torchvision 0.19.1, every other package at the lock's version (benchmarks/suite_with.sh), then pytest with
# any arguments given (default: the whole suite but the GPU check, which reruns everything at toy sizes).
#
#   bash benchmarks/oldest_torch.sh [PYTEST ARGS]     # first run: about 3 GB into $OLDEST_VENV (a CUDA build)
#
# Its first run (2026-12-07) failed every training run: torchvision < 0.21 calls a custom v2 transform's
# _get_params/_transform, not make_params/transform (competition/data/colour.py now has both names).
set -euo pipefail
exec bash "$(dirname "$0")/suite_with.sh" "${OLDEST_VENV:-/tmp/oldest-torch-venv}" torch==2.4.1 torchvision==0.19.1 \
    -- "$@"
