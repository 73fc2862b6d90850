"""Settings: every value checked before work starts (exit 2, one line), fixed settings stay fixed in a search,
`train --resume` refuses result-changing settings, and under --json only the JSON reaches stdout."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from competition import search
from competition.cli import main
from competition.core.config import DEFAULTS, check_setting, resolve
from competition.core.errors import UsageError
from competition.data import write_sample_dataset

TINY = ["--folds", "2", "--epochs", "1", "--image-size", "32", "--batch-size", "4",
        "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=0"]  # fmt: skip


@pytest.fixture
def sample_root(tmp_path):
    return write_sample_dataset(tmp_path / "sample", n_train=10, n_test=4, size=40)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("setting", "fragments"),
    [
        ("lr=abc", ["lr='abc'", "a number in"]),
        ("lr=-0.1", ["lr=-0.1", "a number in"]),
        ("num_workers=-1", ["num_workers=-1", "an integer in 0.."]),
        ("overlays=abc", ["overlays='abc'", "an integer"]),
        ("epochs=0", ["epochs=0", "an integer in 1.."]),
        ("epochs=2.5", ["epochs=2.5", "an integer"]),
        ("class_weights=foo", ["class_weights='foo'", "auto, null, or a list"]),
        ("amp=maybe", ["amp='maybe'", "auto, bf16, fp16, off"]),
        ("save_oof=maybe", ["save_oof='maybe'", "true or false"]),
        ("optimizer=rmsprop", ["optimizer='rmsprop'", "adam, adamw, sgd"]),
        ("loss=ce+hinge", ["loss='ce+hinge'", "ce, dice, focal, lovasz"]),
        ("aug_hflip=2", ["aug_hflip=2", "0..1"]),
        ("classes.UNKNOWN=drop", ["classes=", "keep, ignore or merge"]),
        ("lrr=0.1", ["unknown setting 'lrr'", "did you mean 'lr'?"]),
        ("epoch=3", ["unknown setting 'epoch'", "did you mean 'epochs'?"]),
    ],
)
def test_bad_values_are_one_usage_line_before_any_work(setting, fragments, tmp_path, capsys):
    """No dataset is even generated: the check comes first; exit 2, one line naming the key and value."""
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "train", "unet", "--runs-dir", str(runs), "--set", setting, "--json")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --set"), err
    for fragment in fragments:
        assert fragment in lines[0]
    assert not runs.exists() and not (tmp_path / "cache").exists()  # nothing started


def test_flags_and_config_files_are_checked_too(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "unet", "--epochs", "0")
    assert code == 2 and "--epochs: epochs=0" in err
    config = tmp_path / "c.yaml"
    config.write_text("lr: .nan\n")
    code, _, err = run_cli(capsys, "train", "unet", "--config", str(config))
    assert code == 2 and f"{config}: lr=nan" in err
    config.write_text("batch_size: [4]\n")
    code, _, err = run_cli(capsys, "search", "unet", "--config", str(config))
    assert code == 2 and "batch_size=[4]" in err
    config.write_text("aug_scale_min: 1.5\naug_scale_max: 1.2\n")
    code, _, err = run_cli(capsys, "train", "unet", "--config", str(config))
    assert code == 2 and "aug_scale_min=1.5 > aug_scale_max=1.2" in err


def test_values_are_normalised():
    assert check_setting("lr", "1e-3") == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert check_setting("epochs", 3.0) == 3 and isinstance(check_setting("epochs", 3.0), int)
    assert check_setting("class_weights", [1, 2]) == [1.0, 2.0]
    assert check_setting("fold", None) is None
    with pytest.raises(UsageError):
        check_setting("lr", math.inf)
    cfg = resolve()  # every harness default is itself valid
    assert cfg == {k: cfg[k] for k in DEFAULTS}


def test_class_weights_must_match_the_dataset(sample_root, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "unet", "--data", str(sample_root), "--set", "class_weights=[1, 2]",
                           "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert code == 2 and "class_weights: 2 values for 12 classes" in err


def test_predict_and_ensemble_take_only_prediction_settings(tmp_path, capsys):
    code, _, err = run_cli(capsys, "predict", "some-run", "--set", "lr=0.1")
    assert code == 2 and "lr does not apply to predict; it takes batch_size, device" in err
    code, _, err = run_cli(capsys, "predict", "some-run", "--set", "batch_size=abc")
    assert code == 2 and "batch_size='abc'" in err
    code, _, err = run_cli(capsys, "ensemble", "a", "b", "--set", "num_workers=-2")
    assert code == 2 and "num_workers=-2" in err
    code, _, err = run_cli(capsys, "predict", "some-run", "--set", "batch_size=2", "--runs-dir", str(tmp_path))
    assert code == 1 and "no run 'some-run'" in err  # valid settings pass on to the run lookup


# --------------------------------------------------------------------------- fixed settings in a search


def stand_in_training(monkeypatch) -> list[dict]:
    """Replace train_run by a stand-in that records each trial's settings and scores lr."""
    seen: list[dict] = []

    def train_run(cfg, run_dir, log, on_epoch=None, on_fold=None):
        run_dir.mkdir(parents=True, exist_ok=True)
        seen.append(cfg)
        on_epoch(0, 0, cfg["lr"], {})
        (run_dir / "results.json").write_text(json.dumps({"miou": cfg["lr"]}))
        return {"miou": cfg["lr"], "run": run_dir.name}

    monkeypatch.setattr("competition.train.train_run", train_run)
    return seen


def test_fixed_settings_are_pinned_stored_and_guarded(sample_root, tmp_path, monkeypatch, capsys):
    seen = stand_in_training(monkeypatch)
    space = tmp_path / "space.yaml"
    space.write_text(
        "lr: {type: float, low: 0.001, high: 0.01}\n"
        "image_size: {type: categorical, choices: [48, 64]}\n"
        "batch_size: {type: categorical, choices: [2, 8]}\n"
    )
    runs = tmp_path / "runs"
    base = ["search", "unet", "--data", str(sample_root), "--runs-dir", str(runs), "--space", str(space),
            "--no-predict", "--pruner", "none", "--folds", "2"]  # fmt: skip
    code, out, err = run_cli(capsys, *base, "--image-size", "32", "--batch-size", "4", "--trials", "3")
    assert code == 0, err
    assert "fixed by you: folds=2, image_size=32, batch_size=4" in out
    assert "search space: lr\n" in out  # the fixed keys left the space
    assert [(c["image_size"], c["batch_size"]) for c in seen] == [(32, 4)] * 3  # pinned in every trial
    study = optuna.load_study(study_name="unet", storage=search.open_storage(f"sqlite:///{runs / 'optuna.db'}"))
    assert study.user_attrs["fixed"] == {"folds": 2, "image_size": 32, "batch_size": 4}
    assert all(set(search.trial_params(t)) == {"lr"} for t in study.trials)

    code, _, err = run_cli(capsys, *base, "--image-size", "48", "--set", "loss=dice", "--trials", "1")
    assert code == 2 and len(seen) == 3  # refused before any trial
    assert "image_size (32 -> 48)" in err and "loss (unset -> dice)" in err and "--force" in err

    code, out, err = run_cli(capsys, *base, "--trials", "1")  # not given again: the study's values stay
    assert code == 0, err
    assert "fixed by the study: image_size=32, batch_size=4" in out and seen[-1]["image_size"] == 32

    code, out, err = run_cli(capsys, *base, "--image-size", "48", "--trials", "1", "--force")
    assert code == 0, err
    assert seen[-1]["image_size"] == 48 and seen[-1]["batch_size"] == 4
    study = optuna.load_study(study_name="unet", storage=search.open_storage(f"sqlite:///{runs / 'optuna.db'}"))
    assert study.user_attrs["fixed"]["image_size"] == 48


def test_trial_zero_is_the_default_even_outside_the_space(sample_root, tmp_path, monkeypatch, capsys):
    seen = stand_in_training(monkeypatch)
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.001, high: 0.01}\n")  # the unet default, 3e-4, lies outside
    code, _, err = run_cli(capsys, "search", "unet", "--data", str(sample_root), "--runs-dir", str(tmp_path / "r"),
                           "--space", str(space), "--trials", "2", "--no-predict")  # fmt: skip
    assert code == 0, err
    assert seen[0]["lr"] == 3e-4 and 1e-3 <= seen[1]["lr"] <= 1e-2


# --------------------------------------------------------------------------- resume


def test_resume_refuses_settings_that_change_results(sample_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "train", "unet", "--data", str(sample_root), "--runs-dir", str(runs),
                             "--json", *TINY)  # fmt: skip
    assert code == 0, err
    run = json.loads(out.strip().splitlines()[-1])["run"]
    before = (runs / run / "results.json").read_text()
    code, _, err = run_cli(capsys, "train", "unet", "--resume", run, "--runs-dir", str(runs), "--epochs", "3",
                           "--set", "lr=0.01")  # fmt: skip
    assert code == 2 and "epochs (1 -> 3)" in err and "lr (0.0003 -> 0.01)" in err
    assert (runs / run / "results.json").read_text() == before
    same = ["--epochs", "1", "--set", "num_workers=0", "--device", "cpu"]  # same value, and machinery: accepted
    code, _, err = run_cli(capsys, "train", "unet", "--resume", run, "--runs-dir", str(runs), *same)
    assert code == 0, err
    config = json.loads((runs / run / "config.json").read_text())
    assert config["epochs"] == 1 and config["device"] == "cpu"


# --------------------------------------------------------------------------- --json


def test_json_stdout_holds_only_the_json_from_every_process(sample_root, tmp_path):
    """Two worker processes log; under --json their lines go to stderr, stdout is one JSON object."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}))
    proc = subprocess.run(
        [sys.executable, "-m", "competition", "search", "unet", "--data", str(sample_root), "--runs-dir",
         str(tmp_path / "runs"), "--space", str(space), "--workers", "2", "--trials", "2", "--json", *TINY],
        capture_output=True, text=True, timeout=600, cwd=Path.cwd(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[:2000]
    result = json.loads(lines[0])
    assert result["complete"] == 2 and result["submission"].endswith("unet-best.csv"), proc.stderr[-4000:]
    assert "[w0]" in proc.stderr and "[w1]" in proc.stderr and "ready to upload" in proc.stderr
