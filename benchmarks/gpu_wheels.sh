#!/usr/bin/env bash
# Wheels a lent GPU machine lacks (it has its own Python 3.12 with torch, timm, pandas, OpenCV and tensorboard,
# and no network), downloaded here for CPython 3.12 / manylinux x86-64 at the versions of requirements.lock, into
# .gpu-wheels/ (git-ignored; carry it to the machine). benchmarks/gpu_check.sh installs them there with
# `pip install --no-index --no-deps --target` and runs on the machine's own torch. At most 64 MiB in all.
#
#   bash benchmarks/gpu_wheels.sh            # then: GPU_CHECK_PYTHON=python3 bash benchmarks/gpu_check.sh there
# GPU_WHEELS_PYTHON=3.11 GPU_WHEELS_DEST=DIR: for another CPython into another folder (gpu_rehearsal.sh does so).
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
version="${GPU_WHEELS_PYTHON:-3.12}"
dest="${GPU_WHEELS_DEST:-.gpu-wheels}"
[[ -n "${GPU_WHEELS_DEST:-}" ]] || rm -rf .gpu-wheels  # a folder of the caller's is only added to
mkdir -p "$dest"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --dest "$dest" \
    --python-version "$version" --implementation cp --abi "cp${version/./}" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${pins[@]}"
total=$(du -sm "$dest" | cut -f1)
echo "gpu_wheels: $(ls "$dest" | wc -l) wheels for CPython $version, ${total} MiB in $dest/"
if ((total > LIMIT_MIB)); then
    echo "gpu_wheels: more than $LIMIT_MIB MiB: drop a package the machine has" >&2
    exit 1
fi
