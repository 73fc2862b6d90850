#!/usr/bin/env bash
# Wheels a lent GPU machine lacks (it has its own Python 3.12 with torch, timm, pandas, OpenCV and tensorboard,
# and no network), downloaded here for CPython 3.12 / manylinux x86-64 at the versions of requirements.lock, into
# .gpu-wheels/ (git-ignored; carry it to the machine). benchmarks/gpu_check.sh installs them there with
# `pip install --no-index --no-deps --target` and runs on the machine's own torch. At most 64 MiB in all.
#
#   bash benchmarks/gpu_wheels.sh            # then: GPU_CHECK_PYTHON=python3 bash benchmarks/gpu_check.sh there
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(segmentation-models-pytorch optuna pycocotools alembic SQLAlchemy Mako colorlog
          pytest pluggy iniconfig pytest-timeout matplotlib contourpy cycler kiwisolver pyparsing fonttools packaging)  # scipy (35 MB, --pruner wilcoxon only) left out
LIMIT_MIB=64
pins=()
for name in "${PACKAGES[@]}"; do
    pin="$(grep -i -E "^${name//-/[-_]}==" requirements.lock || true)"
    [[ -n "$pin" ]] || { echo "gpu_wheels: $name is not in requirements.lock" >&2; exit 1; }
    pins+=("$pin")
done
rm -rf .gpu-wheels
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --dest .gpu-wheels \
    --python-version 3.12 --implementation cp --abi cp312 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${pins[@]}"
total=$(du -sm .gpu-wheels | cut -f1)
echo "gpu_wheels: $(ls .gpu-wheels | wc -l) wheels, ${total} MiB in .gpu-wheels/"
if ((total > LIMIT_MIB)); then
    echo "gpu_wheels: more than $LIMIT_MIB MiB: drop a package the machine has" >&2
    exit 1
fi
