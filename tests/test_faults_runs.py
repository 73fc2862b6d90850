"""Fault table, run folders: tampered, truncated and foreign checkpoints; truncated probability files; paths
read from manifests; a full disk; a NaN loss; CUDA out of memory (simulated on the CPU).

The run folders here are made by hand from an untrained model (no training needed to break one), or trained
for one epoch on 32 px images, in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from competition.cli import main
from competition.core.config import resolve
from competition.core.errors import UserError
from competition.core.runs import run_name, update_run, write_config
from competition.data import DataRoot, write_sample_dataset

ARGS = ["--folds", "2", "--epochs", "1", "--image-size", "32", "--batch-size", "2", "--device", "cpu",
        "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=0"]  # fmt: skip


def one_error(capsys, argv: list[str], code: int = 1) -> str:
    got = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line.startswith("error:")]
    assert got == code, captured.err[-2000:]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err[-2000:]
    return lines[0]


@pytest.fixture
def data(tmp_path):
    return write_sample_dataset(tmp_path / "sample", n_train=8, n_test=2, size=32)


def hand_made_run(data: Path, run: Path) -> Path:
    """A complete-looking run folder of an untrained unet (resnet18): config.json, run.json, fold_0/best.pt."""
    cfg = resolve(models.get_spec("unet").defaults, flags={"folds": 2, "image_size": 32, "batch_size": 2,
                  "num_workers": 0, "encoder": "resnet18", "device": "cpu", "encoder_weights": None})  # fmt: skip
    cfg.update(model="unet", data=str(data))
    classes = DataRoot(data).classes(cfg["classes"], cfg["ignore_index"])
    model, _ = models.create_model("unet", classes.num_classes, cfg, lambda m: None)
    (run / "fold_0").mkdir(parents=True)
    write_config(run, cfg)
    update_run(run, id=run.name, model="unet", status="complete", classes=list(classes.names))
    torch.save({"model": model.state_dict(), "epoch": 1, "score": 0.1}, run / "fold_0" / "best.pt")
    return run


def predict_args(runs: Path, name: str = "r") -> list[str]:
    return ["predict", "r", "--runs-dir", str(runs), "--name", name]


class Payload:
    """A pickle that runs code when loaded (as a tampered checkpoint would)."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


TAMPERED = {
    "code-running pickle": (lambda p: p.write_bytes(pickle.dumps({"model": Payload()})), "refused to load"),
    "torch file with code": (lambda p: torch.save({"model": Payload()}, p), "refused to load"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "unreadable checkpoint"),
    "empty": (lambda p: p.write_bytes(b""), "unreadable checkpoint"),
    "another model": (
        lambda p: torch.save({"model": torch.nn.Linear(2, 3).state_dict()}, p),
        "checkpoint of another model",
    ),
    "another class count": (
        lambda p: torch.save(
            {"model": models.create_model("unet", 5, {"encoder": "resnet18", "encoder_weights": None})[0].state_dict()},
            p,
        ),
        "checkpoint of another model or class count",
    ),  # fmt: skip
    "not a dictionary": (lambda p: torch.save(torch.zeros(3), p), "not a checkpoint of this harness"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_checkpoints_are_one_line(case, data, tmp_path, capsys):
    runs = tmp_path / "runs"
    run = hand_made_run(data, runs / "r")
    tamper, fragment = TAMPERED[case]
    tamper(run / "fold_0" / "best.pt")
    line = one_error(capsys, predict_args(runs))
    assert "best.pt" in line and fragment in line, line
    assert not (Path.cwd() / "PWNED").exists() and not (tmp_path / "PWNED").exists()  # nothing ran
    assert not (Path.cwd() / "submissions" / "r.csv").exists() and not (run / "test" / "probs.npy").exists()


def test_the_untampered_hand_made_run_predicts(data, tmp_path, capsys):
    """The control of the cases above: the same folder, untouched, predicts."""
    hand_made_run(data, tmp_path / "runs" / "r")
    assert main(predict_args(tmp_path / "runs")) == 0
    assert (Path.cwd() / "submissions" / "r.csv").exists()


def test_corrupt_resume_state_is_one_line(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    run = hand_made_run(data, runs / "r")
    update_run(run, status="running")
    (run / "fold_0" / "last.pt").write_bytes(b"PK\x03\x04 not really a zip")
    line = one_error(capsys, ["train", "unet", "--resume", "r", "--runs-dir", str(runs)])
    assert "last.pt" in line and "unreadable checkpoint" in line


@pytest.fixture
def predicted(data, tmp_path, capsys):
    """A hand-made run with stored test probabilities."""
    runs = tmp_path / "runs"
    hand_made_run(data, runs / "r")
    assert main(predict_args(runs)) == 0
    capsys.readouterr()
    return runs


PROBS_DAMAGE = {
    "truncated array": (lambda d: _truncate(d / "probs.npy"), "unreadable probabilities"),
    "array of another shape": (lambda d: np.save(d / "probs.npy", np.zeros((1, 2), np.float16)), "does not match"),
    "manifest not JSON": (lambda d: (d / "probs.json").write_text('{"images": ['), "unreadable probabilities"),
}


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 3)


@pytest.mark.parametrize("case", list(PROBS_DAMAGE))
def test_damaged_probability_files_are_one_line(case, predicted, capsys):
    damage, fragment = PROBS_DAMAGE[case]
    damage(predicted / "r" / "test")
    line = one_error(capsys, ["pseudo-label", "r", "--runs-dir", str(predicted)])
    assert "probs" in line and fragment in line, line
    assert not (predicted / "pseudo").exists() or not any((predicted / "pseudo").iterdir())


@pytest.mark.parametrize("name", ["../outside", "/etc", "a/b", "..", "", "x\\..\\y"])
def test_run_names_from_records_stay_inside_the_runs_folder(name):
    with pytest.raises(UserError, match="not a plain name"):
        run_name(name, "study s trial 3")
    assert run_name("unet-t001-abcd", "x") == "unet-t001-abcd"


def test_a_study_record_pointing_outside_runs_deletes_nothing(tmp_path):
    """keep_oof deletes files of the runs a study names: a record naming `../victim` is refused."""
    import optuna

    from competition.search.callbacks import keep_oof_callback

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "fold_0").mkdir()
    (victim / "fold_0" / "oof.npy").write_bytes(b"precious")
    study = optuna.create_study(direction="maximize")
    for value, run in ((0.9, "good"), (0.1, "../victim")):
        study.add_trial(optuna.create_trial(value=value, user_attrs={"run": run}))
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match="not a plain name"):
        keep_oof_callback(1, tmp_path / "runs", lambda m: None)(study, study.trials[-1])
    assert (victim / "fold_0" / "oof.npy").read_bytes() == b"precious"


# --------------------------------------------------------------------------- resources


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE for this process: a write past `nbytes` fails with EFBIG, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def no_temporaries(folder: Path) -> None:
    assert [p for p in folder.rglob(".*.tmp")] == []


def test_disk_full_while_writing_test_probabilities(predicted, capsys):
    csv = Path.cwd() / "submissions" / "r.csv"
    before = csv.read_bytes()
    shutil.rmtree(predicted / "r" / "test")
    with file_size_limit(200_000):  # the probabilities need 2 x 12 x 256 x 256 x 2 bytes = 3 MB
        line = one_error(capsys, predict_args(predicted))
    assert "disk full" in line and "probs.npy" in line
    assert not (predicted / "r" / "test" / "probs.npy").exists() and csv.read_bytes() == before
    no_temporaries(predicted / "r")


def test_disk_full_while_writing_a_checkpoint(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    with file_size_limit(4_000_000):  # a resnet18 unet checkpoint is ~57 MB
        line = one_error(capsys, ["train", "unet", "--data", str(data), "--runs-dir", str(runs), *ARGS])
    assert "disk full" in line and "best.pt" in line, line
    (run,) = runs.iterdir()
    assert not list(run.rglob("*.pt")) and json.loads((run / "config.json").read_text())["model"] == "unet"
    no_temporaries(run)


def test_nan_loss_fails_the_run_with_its_reason(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        "competition.train.losses.MixedLoss.forward", lambda self, logits, target: logits.sum() * np.nan
    )
    runs = tmp_path / "runs"
    line = one_error(capsys, ["train", "unet", "--data", str(data), "--runs-dir", str(runs), *ARGS])
    assert "loss is nan" in line
    (run,) = runs.iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "loss is nan" in info["reason"]


def oom_above(monkeypatch, largest: int) -> list[int]:
    """train_epoch raises CUDA's out-of-memory error for batches larger than `largest`; returns batch sizes seen."""
    from competition.train import fold as loop

    real, seen = loop.train_epoch, []

    def train_epoch(f, setup, desc):
        seen.append(f.train_loader.batch_size)
        if f.train_loader.batch_size > largest:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(f, setup, desc)

    monkeypatch.setattr(loop, "train_epoch", train_epoch)
    return seen


def test_out_of_memory_fails_the_run_with_its_reason(data, tmp_path, monkeypatch, capsys):
    oom_above(monkeypatch, 1)
    runs = tmp_path / "runs"
    line = one_error(capsys, ["train", "unet", "--data", str(data), "--runs-dir", str(runs), *ARGS])
    assert "CUDA out of memory at batch size 2" in line and "oom=halve" in line
    (run,) = runs.iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_out_of_memory_with_oom_halve_retries_once_at_half_the_batch(data, tmp_path, monkeypatch, capsys):
    seen = oom_above(monkeypatch, 2)
    runs = tmp_path / "runs"
    args = ["train", "unet", "--data", str(data), "--runs-dir", str(runs), *ARGS, "--batch-size", "4"]
    assert main([*args, "--set", "oom=halve"]) == 0
    assert seen == [4, 2, 2]  # fold 0 at 4 (out of memory), then both folds at 2
    (run,) = runs.iterdir()
    assert json.loads((run / "config.json").read_text())["batch_size"] == 2  # a resume keeps the working size
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["oom_retry"] == {"batch_size": [4, 2]}
    assert "oom=halve: retrying the unfinished folds with batch size 2" in capsys.readouterr().out


def test_out_of_memory_twice_with_oom_halve_fails(data, tmp_path, monkeypatch, capsys):
    seen = oom_above(monkeypatch, 1)
    runs = tmp_path / "runs"
    args = ["train", "unet", "--data", str(data), "--runs-dir", str(runs), *ARGS, "--batch-size", "4"]
    line = one_error(capsys, [*args, "--set", "oom=halve"])
    assert seen == [4, 2] and "CUDA out of memory at batch size 2" in line
