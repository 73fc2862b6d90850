"""Fault table, processes: kill -9 at every writing stage, then the same command again; Ctrl-C in a search.

A real process is the point here: each case starts `./run.sh ...` in a child process that SIGKILLs itself at
one exact place (the Nth call of a function: mid-epoch, mid-checkpoint, mid-probabilities, mid-CSV), so the
kill is deterministic and quick. Running the command again must end with results identical to a run that was
never killed, and no half file may ever sit under a final name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from competition.cli import main
from competition.data import write_sample_dataset
from competition.search import open_storage
from tests.conftest import LR_SPACE

# val_every=1: every epoch validated, since the kill points count the run's checkpoint writes
TINY = ["--folds", "2", "--epochs", "2", "--image-size", "32", "--batch-size", "2", "--seed", "3",
        "--device", "cpu", "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=0",
        "--set", "val_every=1"]  # fmt: skip

# Runs `python -m competition ARGS` in this process after patching KILL_AT (module:attribute) so that its
# KILL_NTH-th call SIGKILLs the process: `before` the call, or `after` it with the file it wrote cut in half.
KILLER = r"""
import importlib, io, os, signal, sys
module_name, attr = os.environ["KILL_AT"].split(":")
nth, mode = int(os.environ["KILL_NTH"]), os.environ["KILL_MODE"]
owner_name, _, attr = attr.rpartition(".")
owner = importlib.import_module(module_name)
if owner_name:
    owner = getattr(owner, owner_name)
real, calls = getattr(owner, attr), [0]

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def patched(*args, **kwargs):
    calls[0] += 1
    if calls[0] != nth:
        return real(*args, **kwargs)
    if mode == "before":
        die()
    if mode == "half-file":  # torch.save(obj, f) or write_submission(path, ...): half the bytes, then death
        target = args[1] if attr == "save" else args[0]
        if hasattr(target, "write"):
            buf = io.BytesIO(); real(args[0], buf, *args[2:], **kwargs)
            target.write(buf.getvalue()[: len(buf.getvalue()) // 2]); target.flush()
        else:
            real(*args, **kwargs)
            os.truncate(target, os.path.getsize(target) // 2)
        die()
    result = real(*args, **kwargs)  # after: e.g. one block of probabilities written, then death
    die()

setattr(owner, attr, patched)
from competition.cli import main
sys.argv = ["competition", *sys.argv[1:]]
raise SystemExit(main())
"""


def killed_run(args: list[str], at: str, nth: int, mode: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT": at, "KILL_NTH": str(nth), "KILL_MODE": mode}
    done = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    return done


def half_files(folder: Path) -> list[Path]:
    """Temporary files (`.NAME.PID.tmp`) a killed writer left: never under a final name."""
    return sorted(p for p in folder.rglob(".*.tmp"))


def quiet_main(capsys, *argv: str) -> int:
    code = main(list(argv))
    capsys.readouterr()
    return code


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny dataset and the reference: run `ref` (never killed), its prediction, and an ensemble of it with
    a copy of it."""
    base = tmp_path_factory.mktemp("kill")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPETITION_CACHE", str(base / "cache"))
        mp.chdir(base)
        data = write_sample_dataset(base / "data", n_train=8, n_test=3, size=32)
        runs = base / "runs"
        assert main(["train", "unet", "--data", str(data), "--runs-dir", str(runs), *TINY]) == 0
        next(p for p in runs.iterdir() if p.name.startswith("unet-")).rename(runs / "ref")
        shutil.copytree(runs / "ref", runs / "other")  # an ensemble needs two members; equal ones will do
        assert main(["predict", "ref", "--runs-dir", str(runs), "--name", "ref"]) == 0
        assert main(["ensemble", "ref", "other", "--runs-dir", str(runs), "--name", "ens"]) == 0
    return base, data


def same_fold_results(a: Path, b: Path) -> None:
    """Two run folders trained the same: every fold's result, history (minus timings) and OOF probabilities."""
    for fold in (0, 1):
        fa, fb = a / f"fold_{fold}", b / f"fold_{fold}"
        assert json.loads((fa / "result.json").read_text()) == json.loads((fb / "result.json").read_text())
        ma, mb = (pd.read_csv(f / "metrics.csv").drop(columns="seconds") for f in (fa, fb))
        pd.testing.assert_frame_equal(ma, mb)
        assert np.array_equal(np.load(fa / "oof.npy"), np.load(fb / "oof.npy"))
        assert not (fb / "last.pt").exists()
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    assert ra["miou"] == rb["miou"] and ra["folds"] == rb["folds"]


def test_kill_during_training_then_resume_is_identical(world, tmp_path, capsys):
    """Three kills of one run, each in a different place, each followed by `train --resume RUN` (itself killed
    the next time), then a last resume: the run ends identical to the reference that was never killed.
    4 training images per fold, batch 2: 2 optimiser steps per epoch."""
    base, data = world
    runs = tmp_path / "runs"
    args = ["train", "unet", "--data", str(data), "--runs-dir", str(runs), *TINY]
    # 1. kill -9 mid-checkpoint write: fold 0 epoch 1's last.pt (torch.save call 2) is half written
    first = killed_run(args, "torch:save", 2, "half-file", tmp_path)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    assert json.loads((run / "run.json").read_text())["status"] == "running" and not (run / "results.json").exists()
    assert not (run / "fold_0" / "last.pt").exists() and len(half_files(run)) == 1  # only under its temporary name
    torch_load_ok(run / "fold_0" / "best.pt")
    # 2. kill -9 mid-epoch: the resume starts fold 0 again (no last.pt); its 3rd optimiser step is in epoch 2
    killed_run([*args, "--resume", run.name], "competition.train.fold:optimizer_step", 3, "before", tmp_path)
    assert half_files(run) == []  # the dead writer's temporary was removed by the resume
    torch_load_ok(run / "fold_0" / "last.pt")
    # 3. kill -9 mid-OOF write: the resume continues fold 0 at epoch 2, then writes its OOF probabilities
    killed_run([*args, "--resume", run.name], "competition.predict.probs:ProbsWriter.write", 1, "after", tmp_path)
    assert not (run / "fold_0" / "oof.npy").exists() and not (run / "fold_0" / "result.json").exists()
    assert first.returncode == -signal.SIGKILL
    # the same command once more finishes, identical to the run that was never killed
    assert quiet_main(capsys, *args, "--resume", run.name) == 0
    assert half_files(run) == []
    same_fold_results(base / "runs" / "ref", run)


def torch_load_ok(path: Path) -> None:
    """A file under a final name is whole: it loads."""
    from competition.core.checkpoint import load_checkpoint

    assert "model" in load_checkpoint(path)


def copy_runs(world, tmp_path: Path) -> Path:
    base, _ = world
    runs = tmp_path / "runs"
    for name in ("ref", "other"):
        shutil.copytree(base / "runs" / name, runs / name, ignore=shutil.ignore_patterns("test", ".lock"))
    return runs


@pytest.mark.parametrize(
    ("case", "at", "mode"),
    [
        ("kill -9 mid test-probability write", "competition.predict.probs:ProbsWriter.write", "after"),
        ("kill -9 mid CSV write", "competition.submit.save:write_submission", "half-file"),
    ],
)
def test_kill_during_predict_then_rerun_is_identical(case, at, mode, world, tmp_path, capsys):
    base, _ = world
    runs = copy_runs(world, tmp_path)
    csv = tmp_path / "submissions" / "ref.csv"
    csv.parent.mkdir()
    csv.write_text("an earlier submission\n")  # a file of the same name must survive a killed rewrite
    args = ["predict", "ref", "--runs-dir", str(runs), "--name", "ref"]
    killed_run(args, at, 1, mode, tmp_path)
    assert csv.read_text() == "an earlier submission\n"
    if "probability" in case:
        assert not (runs / "ref" / "test" / "probs.npy").exists()
    assert quiet_main(capsys, *args) == 0
    assert csv.read_bytes() == (base / "submissions" / "ref.csv").read_bytes()
    assert np.array_equal(np.load(runs / "ref" / "test" / "probs.npy"), np.load(base / "runs/ref/test/probs.npy"))
    assert half_files(tmp_path / "submissions") == []


def test_kill_during_ensemble_then_rerun_is_identical(world, tmp_path, capsys):
    base, _ = world
    runs = copy_runs(world, tmp_path)
    args = ["ensemble", "ref", "other", "--runs-dir", str(runs), "--name", "ens"]
    killed_run(args, "competition.submit.save:write_submission", 1, "half-file", tmp_path)
    csv = tmp_path / "submissions" / "ens.csv"
    assert not csv.exists()
    assert quiet_main(capsys, *args) == 0
    assert csv.read_bytes() == (base / "submissions" / "ens.csv").read_bytes()


def test_ctrl_c_marks_the_trial_and_the_same_command_resumes_it(world, tmp_path, capsys):
    """SIGINT mid-trial: exit 130 with one line; the trial is FAIL with its reason, its run `interrupted`, and
    queued; the same command then finishes it in the same folder, keeping its finished fold."""
    _, data = world
    runs = tmp_path / "runs"
    space = tmp_path / "space.json"
    space.write_text(json.dumps(LR_SPACE))
    args = ["search", "unet", "--data", str(data), "--runs-dir", str(runs), "--space", str(space), "--study", "c",
            "--trials", "1", "--pruner", "none", "--no-predict", *TINY, "--epochs", "1"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "competition", *args], cwd=tmp_path, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not list(runs.glob("c-t000-*/fold_0/result.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: finished work is saved")
    assert "Traceback" not in err
    (run,) = runs.glob("c-t000-*")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    storage = open_storage(f"sqlite:///{runs / 'optuna.db'}")
    trials = optuna.load_study(study_name="c", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert "interrupted (Ctrl-C)" in trials[0].user_attrs["fail_reason"]
    fold0 = (run / "fold_0" / "result.json").read_text()

    assert quiet_main(capsys, *args) == 0  # the same command
    trials = optuna.load_study(study_name="c", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["run"] == run.name and (run / "fold_0" / "result.json").read_text() == fold0
    assert json.loads((run / "results.json").read_text())["miou"] == pytest.approx(trials[1].value)


def test_a_ctrl_c_swallowed_by_a_finaliser_is_raised_at_the_next_safe_point():
    """SIGINT landing in a finaliser (a garbage-collected database session) is printed and dropped by Python;
    the harness records it and raises it at the next batch, epoch or fold."""
    import gc

    from competition.core import interrupt

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # delivered here, inside __del__: "Exception ignored"

    with interrupt.interrupts():
        interrupt.check()  # nothing pressed yet
        Finalised()
        gc.collect()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    interrupt.check()  # outside the block: forgotten
