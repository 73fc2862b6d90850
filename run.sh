#!/usr/bin/env bash
# The one entry point. `./run.sh --help` lists the commands (../shared/CLI.md is the contract).
#
#   ./run.sh setup                 make .venv with the pinned dependencies (idempotent, instant when unchanged)
#   ./run.sh test [PYTEST ARGS]    the test suite
#   ./run.sh COMMAND ...           any harness command (search, train, predict, ...); sets up first if needed
#
# Reusing an installed torch (e.g. a GPU machine's own CUDA build) instead of downloading one:
#   COMPETITION_SYSTEM_TORCH=1 ./run.sh setup
# makes the venv with --system-site-packages, keeping the interpreter's torch and torchvision (and CUDA libraries)
# at their versions; it needs torch>=2.4 there. PYTHON=python3.12 picks the interpreter.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="${PYTHON:-python3}"
SYSTEM_TORCH="${COMPETITION_SYSTEM_TORCH:-0}"

# prints (stdout) "torch==V" and "torchvision==V", the versions pip knows the interpreter's two by (their metadata:
# a PyPI build says 2.11.0 where torch.__version__ says 2.11.0+cu130), or why they cannot be reused (exit 1)
SYSTEM_TORCH_CHECK='
import sys
from importlib.metadata import version
try:
    import torch, torchvision
    pins = [f"{name}=={version(name)}" for name in ("torch", "torchvision")]
except Exception as e:
    print(f"has no torch and torchvision to reuse ({type(e).__name__}: {e}); install them there, or unset COMPETITION_SYSTEM_TORCH for the lock'"'"'s")
    sys.exit(1)
if tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) < (2, 4):
    print(f"has torch {torch.__version__}, older than the 2.4 the harness needs; unset COMPETITION_SYSTEM_TORCH for the lock'"'"'s")
    sys.exit(1)
print("\n".join(pins))
'

stamp() {
    { cat "$HERE/pyproject.toml" "$HERE/requirements.lock"; echo "system_torch=$SYSTEM_TORCH editable=finder"; "$PY" -V; } \
        | sha256sum | cut -d' ' -f1
}

setup() {
    command -v "$PY" >/dev/null || { echo "setup: no interpreter '$PY' (PYTHON=$PY)" >&2; exit 1; }
    local want
    want="$(stamp)"
    if [[ -x "$VENV/bin/python" && -f "$VENV/.stamp" && "$(cat "$VENV/.stamp")" == "$want" ]]; then
        return 0
    fi
    # with COMPETITION_SYSTEM_TORCH=1: the interpreter's torch and torchvision, checked before anything is removed,
    # then pinned to their very versions, so that no package can make pip replace them (it would download another
    # torch into the venv); none, or one too old, is an error
    local found=""
    if [[ "$SYSTEM_TORCH" == "1" ]]; then
        found="$("$PY" -c "$SYSTEM_TORCH_CHECK")" || { echo "setup: COMPETITION_SYSTEM_TORCH=1: $PY $found" >&2; exit 1; }
    fi
    echo "setup: creating $VENV (pinned dependencies from requirements.lock; takes a minute or two)" >&2
    rm -rf "$VENV"
    local constraints="$HERE/requirements.lock"
    if [[ "$SYSTEM_TORCH" == "1" ]]; then
        "$PY" -m venv --system-site-packages "$VENV"
        constraints="$VENV/constraints.txt"
        { grep -v -E '^(torch|torchvision|triton|nvidia-|cuda-)' "$HERE/requirements.lock"; echo "$found"; } >"$constraints"
        echo "setup: reusing the interpreter's $(echo $found)" >&2
    else
        "$PY" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    # setuptools' own editable mode (an import hook for competition and models; the former `editable_mode=compat`
    # printed at every setup that setuptools will remove it)
    # (its one "Editable installation." notice, 10 lines of stderr at every setup, is only information: filtered)
    PYTHONWARNINGS="ignore:Editable installation" \
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" -e "$HERE[dev]" >&2
    # the dense CRF of `--post auto` (pydensecrf2) has no wheels: a C++ build of about a minute, optional, and
    # said so when it fails (the post-processing then runs without that step and records why)
    # (the package alone, at the lock's version: installing "$HERE[crf]" would replace the editable install)
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" pydensecrf2 \
        >"$VENV/crf-build.log" 2>&1; then
        echo "setup: the dense CRF (pydensecrf2) did not build (log: $VENV/crf-build.log); --post auto runs" \
            "without it and says so. To add it: apt-get install g++ && $VENV/bin/pip install pydensecrf2" >&2
    fi
    echo "$want" >"$VENV/.stamp"
    echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))" >&2
}

cmd="${1:-}"
case "$cmd" in
    setup)
        shift
        if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
        fi
        setup
        ;;
    test)
        shift
        setup
        cd "$HERE"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        setup
        exec "$VENV/bin/python" -m competition "$@"
        ;;
esac
