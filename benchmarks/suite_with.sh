#!/usr/bin/env bash
# The test suite with some packages at other versions than the lock's: a venv made once in VENV with the PINS
# (binary wheels only) and every other package at the lock's version, then pytest with the arguments after `--`
# (default: the whole suite but the GPU check's full run, which reruns everything at toy sizes).
#
#   bash benchmarks/suite_with.sh VENV PIN... [-- PYTEST ARGS]     # PYTHON=python3.12 picks the interpreter
#
# The lock's CUDA runtime packages (nvidia-*, cuda-*, triton) are left to the pinned torch, which names its own.
# VENV is made again when the pins change. Callers: oldest_torch.sh (torch 2.4.1), ubuntu.sh machine-suite (the
# GPU machine's torch 2.11.0 and numpy 2.5.2 on CPython 3.12.3).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
(($# >= 2)) || usage
venv="$1"
shift
pins=()
while (($#)) && [[ "$1" != "--" ]]; do
    [[ "$1" == *==* ]] || { echo "suite_with: $1: a pin is NAME==VERSION" >&2; exit 2; }
    pins+=("$1")
    shift
done
((${#pins[@]})) || usage
(($#)) && shift  # the `--`

stamp="$venv/.complete"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${pins[*]}" ]]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    names="$(printf '%s\n' "${pins[@]%%==*}" | paste -sd '|')"
    constraints="$venv/constraints.txt"
    { grep -v -i -E "^(($names)==|triton==|nvidia-|cuda-)" requirements.lock; printf '%s\n' "${pins[@]}"; } \
        >"$constraints"
    echo "suite_with: installing ${pins[*]} and the lock's other versions into $venv (about 4 GB once)" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "${pins[@]}"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" -e ".[dev]"
    echo "${pins[*]}" >"$stamp"
fi
"$venv/bin/python" -c 'import sys, numpy, torch, torchvision as tv
print(f"suite_with: CPython {sys.version.split()[0]}, numpy {numpy.__version__}, torch {torch.__version__}, "
      f"torchvision {tv.__version__}")'
if (($#)); then
    exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --deselect tests/test_gpu_check.py::test_gpu_check_runs_and_writes_one_table tests
