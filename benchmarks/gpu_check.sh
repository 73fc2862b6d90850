#!/usr/bin/env bash
# The GPU check: one script, one table. On a CUDA machine (H100/H200, ~8 minutes) it runs
#   1. the CUDA-only tests (pytest -m cuda: AMP bf16/fp16 runs, channels_last, OOM halving, predict and ensemble
#      on the GPU, a two-worker search on one GPU),
#   2. bench_train.py at 512 x 512 for fcn8s, fcn16s and unet (resnet34): images/s, peak memory and MFU (model
#      FLOPs per image counted by torch.utils.flop_counter, against the GPU's dense peak) for bf16 +
#      channels_last (A), fp32 (B), fp16 + GradScaler (F) and A compiled (C),
#   3. bench_loader.py at 512 x 512: the training loader's items/s (2 workers, the default, and every core)
#      beside the GPU's training images/s from step 2: is the GPU starved?
#   4. bench_predict.py at 512 x 512,
#   5. a 2-trial search and a predict on the embedded sample, end to end on CUDA.
# Without CUDA it runs the same steps at toy sizes on the CPU (the CUDA tests are collected and skip) and says
# which CUDA parts it skipped (CI runs it so).
# The table goes to stdout and, when OUT is set, to $OUT/gpu_check.md, rewritten after every step; every step's
# log is appended to $OUT/steps.log, and bench_train's figures are $OUT/bench_train.json: three files, since a
# device call brings back at most 8. Each step has a time limit and all of them together GPU_CHECK_BUDGET seconds
# (default 540), so a hung step costs its own row, never the table, and the check ends inside one 10-minute call.
#
#   bash benchmarks/gpu_check.sh                       # with the project's .venv (./run.sh setup first)
#   GPU_CHECK_PYTHON=python3 bash benchmarks/gpu_check.sh
#       a machine's own Python and torch: the packages it lacks are installed from .gpu-wheels/
#       (benchmarks/gpu_wheels.sh downloads them where there is network) into a temporary folder
#       (GPU_CHECK_WHEELS=DIR for another folder; benchmarks/gpu_rehearsal.sh rehearses that path without a GPU)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python}"
if ! command -v "$PY" >/dev/null; then
    echo "gpu_check: no interpreter '$PY' (GPU_CHECK_PYTHON; ./run.sh setup makes .venv)" >&2
    exit 1
fi
# a path relative to where it was called from (.venv/bin/python) is made absolute: the steps run elsewhere
[[ "$PY" != */* || "$PY" == /* ]] || PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
[[ -z "${OUT:-}" || "$OUT" == /* ]] || OUT="$PWD/$OUT"  # so are OUT and GPU_CHECK_WHEELS
[[ -z "${GPU_CHECK_WHEELS:-}" || "$GPU_CHECK_WHEELS" == /* ]] || GPU_CHECK_WHEELS="$PWD/$GPU_CHECK_WHEELS"
cd "$ROOT"
work="$(mktemp -d -t gpu-check.XXXXXX)"  # under $TMPDIR, else /tmp
out="${OUT:-$work}"
[[ -z "${OUT:-}" ]] || trap 'rm -rf "$work"' EXIT  # the results are in $OUT: the work folder goes
logs="$work/logs"
mkdir -p "$out" "$logs"
table="$work/table.md"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.gpu-wheels}"
start_all=$(date +%s)
budget="${GPU_CHECK_BUDGET:-540}"

if ! "$PY" -c "import segmentation_models_pytorch, optuna, pycocotools" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        t=$(date +%s)
        if ! "$PY" -m pip install -q --no-index --no-deps --target "$work/site" "$WHEELS"/*.whl >"$logs/wheels.log" 2>&1
        then
            cp "$logs/wheels.log" "$out/steps.log"
            echo "gpu_check: installing $WHEELS/*.whl failed (steps.log):" >&2
            tail -n 5 "$logs/wheels.log" >&2
            exit 1
        fi
        export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
        echo "gpu_check: installed $(ls "$WHEELS"/*.whl | wc -l) wheels in $(( $(date +%s) - t )) s" >&2
    else
        echo "gpu_check: $PY lacks segmentation_models_pytorch/optuna/pycocotools and there is no $WHEELS/" >&2
        echo "           (run ./run.sh setup, or benchmarks/gpu_wheels.sh where there is network)" >&2
        exit 1
    fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export COMPETITION_OFFLINE=1 HF_HUB_OFFLINE=1  # a GPU machine here has no network: never wait for a download

info="$("$PY" - <<'EOF'
import torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"cuda {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
else:
    print(f"cpu (no CUDA device), torch {torch.__version__}")
EOF
)"
cuda=0
[[ "$info" == cuda* ]] && cuda=1
if ((cuda)); then
    device=cuda size=512 steps=20 epochs=2 isize=256 models=fcn8s,fcn16s,unet compile=--compile batches=60
else
    device=cpu size=64 steps=2 epochs=1 isize=32 models=fcn16s,unet compile="" batches=4
fi

{
    echo "# GPU check: $info"
    echo
    echo "| step | result | seconds | detail |"
    echo "|---|---|---|---|"
} >"$table"
failed=0
deadline=$(( $(date +%s) + budget ))  # counted from here: installing the wheels is not a step

step() {  # step NAME LIMIT DETAIL COMMAND...: run it for at most LIMIT s (and within the budget), one table row
    local name="$1" limit="$2" detail="$3" t rc result left
    shift 3
    left=$(( deadline - $(date +%s) ))
    if ((left < 5)); then
        result="skipped: out of time (GPU_CHECK_BUDGET=$budget s)"
        failed=1
        echo "| $name | $result | 0 | $detail |" >>"$table"
    else
        ((limit <= left)) || limit=$left
        t=$(date +%s)
        timeout -k 10 "$limit" "$@" >"$logs/$name.log" 2>&1  # the step's whole process group on time-out
        rc=$?
        result="ok"
        if ((rc == 124 || rc == 137)); then
            result="TIMED OUT after $limit s (steps.log)"
            failed=1
        elif ((rc != 0)); then
            result="FAILED (exit $rc, steps.log)"
            failed=1
        fi
        echo "| $name | $result | $(( $(date +%s) - t )) | $detail |" >>"$table"
        { echo "===== $name: $result"; cat "$logs/$name.log"; echo; } >>"$out/steps.log"
    fi
    cp "$table" "$out/gpu_check.md"  # a call cut off later still brings back the rows so far
    echo "gpu_check: $name: $result" >&2
}

# the machine's own pytest plugins (pytest-cov, xdist, benchmark, ...) are not loaded: they were built for its pytest,
# not the wheels' one; pytest-timeout (the suite's --timeout) is named. A deprecation from the harness's code is an
# error in the suite (pyproject), but here, under the machine's other numpy and torch, it must not cost the AMP rows:
# it is a warning, counted in a row of its own
cuda_tests=(env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PY" -m pytest -q -p no:cacheprovider -p pytest_timeout
            -W default::DeprecationWarning -W default::FutureWarning -m cuda tests)
if ((cuda)); then
    step cuda-tests 240 "pytest -m cuda" "${cuda_tests[@]}"
else  # the same command, so it is known to collect: every test skips without a GPU
    step cuda-tests 120 "pytest -m cuda: collected, every test skipped (no CUDA device)" "${cuda_tests[@]}"
fi
deprecated="$(grep -E "^ *$ROOT/(competition|models|benchmarks|tests)/[^ ]+:[0-9]+: (Deprecation|Future)Warning" \
              "$logs/cuda-tests.log" 2>/dev/null | sed -E "s#^ *$ROOT/##" | sort -u)"
if [[ -n "$deprecated" ]]; then
    first="$(head -n 1 <<<"$deprecated" | sed 's/|/\\|/g' | cut -c 1-160)"
    echo "| (deprecations) | $(wc -l <<<"$deprecated") in the harness's code | 0 | $first (steps.log) |" >>"$table"
    cp "$table" "$out/gpu_check.md"
fi
step bench-train 300 "$size px, $models, A/B${compile:+/F/C}, MFU" "$PY" benchmarks/bench_train.py --device "$device" \
    --size "$size" --steps "$steps" --models "$models" $compile --json "$out/bench_train.json"
step loader 90 "$size px, loader items/s vs GPU images/s" "$PY" benchmarks/bench_loader.py --device "$device" \
    --size "$size" --batches "$batches" --against "$out/bench_train.json"
step bench-predict 90 "$size px" "$PY" benchmarks/bench_predict.py --device "$device" --size "$size" --steps "$steps"
runs="$work/runs"
sample="$work/sample"
step sample-data 60 "the embedded sample" "$PY" -m competition sample-data "$sample"
step search 150 "fcn16s, 2 trials x 2 folds x $epochs epochs, $isize px, $device" "$PY" -m competition search fcn16s \
    --data "$sample" --runs-dir "$runs" --trials 2 --folds 2 --epochs "$epochs" --image-size "$isize" \
    --device "$device" --no-predict
step predict 90 "best trial of the search, $device" env --chdir "$work" "$PY" -m competition predict best:fcn16s \
    --runs-dir "$runs" --device "$device" --name gpu-check
((cuda)) || echo "| (cuda) | skipped: no CUDA device | 0 | AMP/compile figures need a GPU; the steps above ran on the CPU at toy sizes |" >>"$table"

{
    echo
    echo "total $(( $(date +%s) - start_all )) s"
    for name in bench-train loader bench-predict; do
        echo
        echo "## $name"
        echo
        echo '```'
        [[ -f "$logs/$name.log" ]] || continue
        grep -v -E "Warning|warnings.warn|^\s*$" "$logs/$name.log" | tail -n 16
        echo '```'
    done
} >>"$table"
cp "$table" "$out/gpu_check.md"
cat "$table"
[[ -n "${OUT:-}" ]] || echo "gpu_check: the table, steps.log and bench_train.json are in $work" >&2
exit "$failed"
