"""benchmarks/gpu_check.sh, the one-command GPU check, runs end to end without a GPU too (toy sizes on the CPU,
the CUDA parts skipped and said so) and writes its table to $OUT, so the script a GPU session runs first is
known to work before a GPU is lent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_and_writes_one_table(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_PYTHON": sys.executable}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert done.returncode == 0, done.stderr[-2000:] + table
    assert table.startswith("# GPU check: ") and "| step | result | seconds | detail |" in table
    for name in ("bench-train", "loader", "bench-predict", "search", "predict"):
        assert f"| {name} | ok |" in table, table
    if not torch.cuda.is_available():
        assert "| cuda-tests | skipped: no CUDA device |" in table
    assert "A images/s" in table and "GFLOP/image" in table and "images/s" in table.split("## bench-predict")[1]
    assert "training loader" in table and "loader/GPU" in table.split("## loader")[1]
    assert not list((ROOT / "submissions").glob("gpu-check*"))  # its submission stays in its own folder
