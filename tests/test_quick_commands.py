"""The quick commands answer without importing torch, torchvision, SMP or matplotlib (each stage package's face
loads a name's module on first use: competition/core/lazy.py), and every public name of every face resolves."""

from __future__ import annotations

import importlib
import json
import pkgutil
import types
from pathlib import Path

import pytest

from competition.core.lazy import public_face

ROOT = Path(__file__).resolve().parents[1]
FACES = ("data", "submit", "predict", "train", "search", "ensemble", "report")


def test_quick_commands_import_no_torch(tiny_root, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_cli import heavy_imports  # the benchmark's probe: a command in a new interpreter

    images = [im["file_name"] for im in json.loads((tiny_root / "test.json").read_text())["images"]]
    csv = tmp_path / "background.csv"
    csv.write_text("image_id,PredictionString\n" + "".join(f"{im},{' '.join(['0'] * 65536)}\n" for im in images))
    runs = tmp_path / "runs"
    runs.mkdir()
    commands = {
        "check": ["check", str(csv), "--data", str(tiny_root)],
        "lb": ["lb", str(csv), "0.5", "--runs-dir", str(runs)],
        "leaderboard": ["leaderboard", "--runs-dir", str(runs)],
        "data-info": ["data-info", "--data", str(tiny_root), "--folds", "2"],
    }
    for name, argv in commands.items():
        done, heavy = heavy_imports(argv, tmp_path)
        assert done.returncode == 0 and set(heavy) <= {"pandas"}, f"{name}: {heavy}\n{done.stderr[-2000:]}"
    assert (runs / "lb_scores.json").exists()  # the commands did their work
    done, heavy = heavy_imports(["score", str(csv), "--gt", str(tiny_root / "test.json"), "--data", str(tiny_root)],
                                tmp_path)  # fmt: skip
    assert done.returncode == 0 and set(heavy) <= {"torch", "pandas"}, heavy  # the metric is torch's; no model package


@pytest.mark.parametrize("package", [f"competition.{name}" for name in FACES] + ["models"])
def test_every_public_name_resolves(package):
    face = importlib.import_module(package)
    assert face.__all__ and len(set(face.__all__)) == len(face.__all__)
    # a module named like a public name replaces it on the package when that module is imported
    assert not set(face.__all__) & {m.name for m in pkgutil.iter_modules(face.__path__)}
    for name in face.__all__:
        assert not isinstance(getattr(face, name), types.ModuleType)
        assert name in dir(face)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        face.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec(f"from {package} import no_such_name", {})


def test_a_public_name_that_is_also_a_module_name_is_refused():
    with pytest.raises(ValueError, match=r"competition.predict: public names \['run'\] are also names of its modules"):
        public_face("competition.predict", {".run": ("run", "predict_run")})
