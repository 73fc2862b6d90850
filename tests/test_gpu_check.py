"""benchmarks/gpu_check.sh, the one-command GPU check, runs end to end without a GPU too (toy sizes on the CPU,
the CUDA parts skipped and said so) and writes its table to $OUT, so the script a GPU session runs first is
known to work before a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_and_writes_one_table(tmp_path):
    """Called from another folder, with the interpreter and OUT as paths relative to it (as a user types them)."""
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "OUT": "out", "GPU_CHECK_PYTHON": os.path.relpath(sys.executable, tmp_path),
           "TMPDIR": str(tmp_path / "tmp")}  # fmt: skip
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert done.returncode == 0, done.stderr[-2000:] + table
    assert table.startswith("# GPU check: ") and "| step | result | seconds | detail |" in table
    for name in ("bench-train", "loader", "bench-predict", "search", "predict"):
        assert f"| {name} | ok |" in table, table
    assert "| cuda-tests | ok |" in table  # the command a GPU runs: collected here, every test skipped
    if not torch.cuda.is_available():
        assert "every test skipped (no CUDA device)" in table
    assert "A images/s" in table and "GFLOP/image" in table and "images/s" in table.split("## bench-predict")[1]
    assert "training loader" in table and "loader/GPU" in table.split("## loader")[1]
    assert not list((ROOT / "submissions").glob("gpu-check*"))  # its submission stays in its own folder
    # a device call brings back at most 8 files from $OUT: the table, every step's log in one file, the figures
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench_train.json", "gpu_check.md", "steps.log"]
    assert not list((tmp_path / "tmp").glob("gpu-check.*"))  # its work folder is gone: the results are in $OUT
    steps = (tmp_path / "out" / "steps.log").read_text()
    assert all(f"===== {name}: ok" in steps for name in ("bench-train", "loader", "search", "predict")), steps[-2000:]


def test_a_missing_interpreter_is_one_line_and_nothing_is_made(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_PYTHON": str(tmp_path / "python3"),
           "TMPDIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    said = f"gpu_check: no interpreter '{tmp_path / 'python3'}' (GPU_CHECK_PYTHON; ./run.sh setup makes .venv)\n"
    assert done.stderr == said
    assert not list(tmp_path.iterdir())  # neither $OUT nor a work folder


def test_a_failing_mode_costs_its_cells_not_the_table(tmp_path, monkeypatch, capsys):
    """On a lent GPU a compile error or a crashed worker in one mode (here C, raised by a patched runner) is
    written in its cells and the exit code; the other modes' figures and the JSON are still there."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_train

    def runner(**kwargs):
        if kwargs.get("compile"):
            raise RuntimeError("inductor: no working C compiler\nmore lines")
        fast = kwargs["channels_last"]
        return {"images_per_s": 20.0 if fast else 10.0, "peak_mib": 100.0, "memory": "peak RSS",
                "compile_s": 0.0, "flops_per_image": 8e9}  # fmt: skip

    monkeypatch.setattr(bench_train, "run_isolated", runner)
    out = tmp_path / "train.json"
    code = bench_train.main(["--device", "cpu", "--models", "fcn16s,unet", "--compile", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 1
    rows = [r for r in map(str.split, printed.splitlines()) if r[:1] in (["fcn16s"], ["unet"]) and r[1] != "mode"]
    assert len(rows) == 2 and all(r[2:5] == ["20.00", "10.00", "2.00x"] and r[9] == "failed" for r in rows), printed
    assert "FAILED fcn16s C: RuntimeError: inductor: no working C compiler" in printed
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["A_images_per_s"] == 20.0 and "C_images_per_s" not in saved["rows"][0]
    assert len(saved["failed"]) == 2


def test_a_hung_step_costs_its_row_and_the_budget_ends_the_check(tmp_path):
    """A step that never ends (the CUDA tests, made to hang by a wrapper around the interpreter) is stopped at the
    budget (GPU_CHECK_BUDGET) and marked TIMED OUT; the steps after it are marked out of time; the table is
    written all the same, and the exit code says something failed."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/usr/bin/env bash\n[[ "${{2:-}}" == pytest ]] && exec sleep 600\n'
                       f'exec {sys.executable} "$@"\n')  # fmt: skip
    wrapper.chmod(0o755)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_PYTHON": str(wrapper), "GPU_CHECK_BUDGET": "8"}
    started = time.monotonic()
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert done.returncode == 1, done.stderr[-2000:]
    assert "| cuda-tests | TIMED OUT after " in table and "(steps.log)" in table, table
    for name in ("bench-train", "loader", "bench-predict", "search", "predict"):
        assert f"| {name} | skipped: out of time (GPU_CHECK_BUDGET=8 s) |" in table, table
    assert time.monotonic() - started < 120


def test_a_deprecation_under_the_machines_versions_is_a_row_not_a_failed_test(tmp_path):
    """The suite makes a deprecation from the harness's code an error; the GPU check's CUDA tests, run under the
    machine's own numpy and torch, keep it a warning (so the AMP rows still count) and give it a row of its own.
    Here the wrapped pytest prints such a warnings summary; the next step hangs until the budget."""
    wrapper = tmp_path / "python"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        '[[ "${1:-}" == benchmarks/* ]] && exec sleep 600\n'
        f'[[ "${{2:-}}" == pytest ]] || exec {sys.executable} "$@"\n'
        'for a in "$@"; do [[ "$a" == default::DeprecationWarning ]] && warns=1; done\n'
        '[[ -n "${warns:-}" ]] || exit 3\n'
        f'echo "  {ROOT}/competition/train/loop.py:7: DeprecationWarning: old | call"\n'
        f'echo "  {ROOT}/competition/train/loop.py:7: DeprecationWarning: old | call"\n'
        f'echo "  {ROOT}/.venv/lib/timm/models/x.py:1: DeprecationWarning: not ours"\n'
        'echo "1 passed, 3 warnings"\n'
    )  # fmt: skip
    wrapper.chmod(0o755)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_PYTHON": str(wrapper), "GPU_CHECK_BUDGET": "6"}
    subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, timeout=300)
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| cuda-tests | ok |" in table, table
    assert ("| (deprecations) | 1 in the harness's code | 0 | competition/train/loop.py:7: DeprecationWarning: "
            "old \\| call (steps.log) |") in table, table  # fmt: skip
