"""Optuna search: space handling, pruning steps, fault handling, resume, several workers (journal and
PostgreSQL), and a worker killed with SIGKILL in the middle of a trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import models
from competition import search
from competition.cli import main
from competition.core.config import resolve
from competition.core.errors import UserError
from competition.core.runs import resolve_trial_ref
from competition.data import write_sample_dataset

TINY_ARGS = ["--epochs", "2", "--folds", "2", "--image-size", "32", "--batch-size", "4",
             "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=0"]  # fmt: skip
SMALL_SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
    "loss": {"type": "categorical", "choices": ["ce", "ce+dice"]},
}


@pytest.fixture
def sample_root(tmp_path):
    return write_sample_dataset(tmp_path / "sample", n_train=10, n_test=4, size=40)


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SMALL_SPACE))
    return path


def study_of(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=search.open_storage(url))


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "competition", *args], capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- units


def test_space_files_and_defaults(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "lr: {type: float, low: 0.0001, high: 0.01, log: true}\nbatch_size: {type: categorical, choices: [4, 8]}\n"
    )
    space = search.load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    params = search.suggest(study.ask(), space)
    assert 1e-4 <= params["lr"] <= 1e-2 and params["batch_size"] in (4, 8)
    # trial 0 runs the default configuration exactly, even where it lies outside the space (16: not a choice)
    assert search.default_params(space, {"lr": 3e-4, "batch_size": 16}) == {"lr": 3e-4, "batch_size": 16}
    path.write_text("lr: {type: float, low: 1, high: 0}\n")
    with pytest.raises(UserError, match="space.yaml: lr"):
        search.load_space(path)
    path.write_text("lrr: {type: float, low: 0.1, high: 1}\n")
    with pytest.raises(UserError, match="did you mean 'lr'"):
        search.load_space(path)
    for spec in models.list_models():  # every family's declared space is valid
        search.check_space(spec.search_space, spec.name)


def test_trials_split_exactly_and_passwords_hidden():
    assert search.split_trials(5, 2) == [3, 2] and sum(search.split_trials(7, 3)) == 7
    assert search.split_trials(1, 3) == [1, 0, 0]
    hidden = search.safe_url("postgresql://user:s3cret@db.example:5432/optuna")
    assert "s3cret" not in hidden and "user" in hidden and "db.example" in hidden
    assert isinstance(search.make_pruning("median", resolve()).pruner, optuna.pruners.MedianPruner)
    assert isinstance(search.make_pruning("hyperband", resolve()).pruner, optuna.pruners.HyperbandPruner)


def fake_training(values_by_lr, raise_for=None):
    """A stand-in for train_run: reports a running mean per epoch from a table, records the steps."""
    steps: dict[int, list[int]] = {}

    def train_run(cfg, run_dir, log, on_epoch=None, on_fold=None):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "fold_0").mkdir(exist_ok=True)
        (run_dir / "fold_0" / "best.pt").write_bytes(b"x")
        (run_dir / "fold_0" / "oof.npy").write_bytes(b"x")
        (run_dir / "fold_0" / "oof.json").write_text("{}")
        if raise_for and cfg["lr"] in raise_for:
            raise raise_for[cfg["lr"]]
        value = values_by_lr[cfg["lr"]]
        for fold in range(cfg["folds"]):
            for epoch in range(cfg["epochs"]):
                steps.setdefault(cfg["lr"], []).append(fold * cfg["epochs"] + epoch)
                on_epoch(fold, epoch, value, {"foreground_ratio": 0.5})
            on_fold(fold, {"miou": value})
        return {"miou": value}

    return train_run, steps


def enqueue_lrs(url, name, lrs):
    study = search.open_study(search.StudySpec(url=url, name=name), resolve())
    for lr in lrs:
        study.enqueue_trial({"lr": lr, "loss": "ce"})


def fake_search(
    tmp_path, monkeypatch, values, *, epochs, folds, pruner="none", raise_for=None, log=lambda m: None, **job_options
):
    """A search of four enqueued trials (lr 1e-3, 2e-3, 3e-4, 1e-4) with train_run replaced by fake_training.
    Returns the search job (to launch again), the steps each lr reported, and a loader of the study."""
    fake, steps = fake_training(values, raise_for=raise_for)
    monkeypatch.setattr("competition.train.train_run", fake)
    cfg = {**resolve(flags={"epochs": epochs, "folds": folds}), "model": "unet"}
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    enqueue_lrs(url, "s", [1e-3, 2e-3, 3e-4, 1e-4])
    spec = search.StudySpec(url=url, name="s", pruner=pruner, sampler="tpe", sampler_seed=0)
    job = search.SearchJob(study=spec, base=cfg, space=SMALL_SPACE, runs_dir=tmp_path / "runs", **job_options)
    search.launch(search.open_study(spec, cfg), job, 4, 1, log)
    return job, steps, lambda: study_of(url, "s")


def test_pruning_reports_running_mean_at_global_steps(tmp_path, monkeypatch):
    values = {1e-3: 0.5, 2e-3: 0.6, 3e-4: 0.4, 1e-4: 0.1}
    _, steps, study_now = fake_search(tmp_path, monkeypatch, values, epochs=3, folds=2, pruner="median")
    study = study_now()
    assert [search.is_pruned(t) for t in study.trials] == [False, False, True, True]  # 2 start-up trials
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # a pruned trial returns its partial value
    assert steps[1e-3] == [0, 1, 2, 3, 4, 5]  # fold * epochs + epoch, folds in order
    assert steps[1e-4] == [0, 1]  # pruned at the first step after the warm-up (1 epoch)
    pruned = study.trials[3]
    assert pruned.value == pytest.approx(0.1)  # its running CV mean when it was stopped
    assert pruned.user_attrs["pruned"] == {"after_fold": 0, "epochs": 2, "reason": pruned.user_attrs["prune_reason"]}
    assert "running CV mean" in pruned.user_attrs["prune_reason"]
    run = tmp_path / "runs" / pruned.user_attrs["run"]
    assert json.loads((run / "run.json").read_text())["status"] == "pruned"
    results = json.loads((run / "results.json").read_text())
    assert results["pruned"]["after_fold"] == 0 and results["miou"] == pytest.approx(0.1)
    assert not (run / "fold_0" / "best.pt").exists()  # pruned trials' checkpoints are removed
    assert [t.number for t in search.ranked(study.trials)] == [1, 0, 2, 3]  # pruned ones below the others


def test_epoch_budget_stops_starting_trials(tmp_path, monkeypatch):
    values = {1e-3: 0.5, 2e-3: 0.6, 3e-4: 0.4, 1e-4: 0.1}
    lines = []
    job, steps, study_now = fake_search(
        tmp_path, monkeypatch, values, epochs=3, folds=2, epoch_budget=10, log=lines.append
    )
    study = study_now()
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2 and search.epochs_spent(study) == 12  # 6 < 10 after one trial, 12 after two
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert "6/10 epochs, ETA " in trial_lines[0]  # progress and ETA count epochs under a budget, not --trials
    assert "10/10 epochs;" in trial_lines[1] and "ETA" not in trial_lines[1]
    again = search.open_study(job.study, job.base)
    search.launch(again, job, 4, 1, lambda m: None)  # the budget counts this search's epochs, not the study's
    assert len(study_now().get_trials(states=(TrialState.COMPLETE,))) == 4
    assert sorted(steps) == [1e-4, 3e-4, 1e-3, 2e-3]


def test_search_keeps_oof_probabilities_of_the_best_trials_only(tmp_path, monkeypatch):
    from competition.ensemble import Member, read_oof

    values = {1e-3: 0.5, 2e-3: 0.6, 3e-4: 0.4, 1e-4: 0.1}
    job, _, study_now = fake_search(tmp_path, monkeypatch, values, epochs=1, folds=2, keep_oof=2)
    for t in study_now().trials:
        run = tmp_path / "runs" / t.user_attrs["run"]
        kept = t.params["lr"] in (1e-3, 2e-3)  # the two best values, 0.5 and 0.6
        assert (run / "fold_0" / "oof.npy").exists() == kept and (run / "fold_0" / "oof.json").exists() == kept
        assert (run / "fold_0" / "best.pt").exists()  # every trial can still be predicted
        if not kept:
            with pytest.raises(UserError, match=r"no out-of-fold probabilities .*not among the best 2 trials"):
                read_oof(Member(run, job.base))


def test_keep_checkpoints_deletes_those_of_trials_outside_the_best_and_predict_says_why(tmp_path, monkeypatch):
    from competition.predict.run import fold_checkpoints  # what `predict` and `ensemble` call first

    values = {1e-3: 0.5, 2e-3: 0.6, 3e-4: 0.4, 1e-4: 0.1}
    _, _, study_now = fake_search(tmp_path, monkeypatch, values, epochs=1, folds=2, keep_checkpoints=1)
    for t in study_now().trials:
        run = tmp_path / "runs" / t.user_attrs["run"]
        kept = t.params["lr"] == 2e-3  # the best trial only
        assert (run / "fold_0" / "best.pt").exists() == kept and (kept or not list(run.glob("fold_*/best.pt")))
        assert (run / "fold_0" / "oof.npy").exists()  # --keep-oof (default 5) keeps all four
        if not kept:
            assert "not among the best 1" in json.loads((run / "run.json").read_text())["checkpoints_removed"]
            with pytest.raises(UserError, match=r"deleted by --keep-checkpoints \(not among the best 1 trials"):
                fold_checkpoints(run)


def test_keep_checkpoints_below_one_is_a_usage_error(tmp_path, capsys):
    code = main(["search", "unet", "--runs-dir", str(tmp_path / "runs"), "--keep-checkpoints", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--keep-checkpoints 0: expected 1 or more" in err, err


def test_oom_and_nan_end_only_that_trial(tmp_path, monkeypatch):
    from competition.train import NonFiniteLoss

    errors = {2e-3: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
              3e-4: NonFiniteLoss("fold 0 epoch 1: loss is nan")}  # fmt: skip
    _, _, study_now = fake_search(tmp_path, monkeypatch, {1e-3: 0.5, 1e-4: 0.3}, epochs=1, folds=2, raise_for=errors)
    trials = study_now().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert "out of memory" in trials[1].user_attrs["fail_reason"]
    assert "loss is nan" in trials[2].user_attrs["fail_reason"]


# --------------------------------------------------------------------------- end to end


def test_search_end_to_end_and_resume(sample_root, space_file, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["search", "unet", "--data", str(sample_root), "--runs-dir", str(runs), "--space", str(space_file),
            "--pruner", "none", "--seed", "1", "--json", *TINY_ARGS]  # fmt: skip
    assert main([*args, "--trials", "2"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["study"] == "unet" and out["trials"] == 2 and out["complete"] == 2
    assert {"storage", "pruned", "failed", "best"} <= set(out) and out["storage"].startswith("sqlite:///")
    assert set(out["best"]) >= {"miou", "params", "run"}
    checkpoints = sum(p.stat().st_size for p in runs.glob("unet-t*/fold_*/best.pt"))
    oofs = sum(p.stat().st_size for p in runs.glob("unet-t*/fold_*/oof.npy"))
    assert out["disk_bytes"] == {"checkpoints": checkpoints, "oof": oofs, "test_probs": 0} and checkpoints > 0
    assert f"checkpoints {checkpoints / 1e9:.2f} GB" in captured.err
    study = study_of(out["storage"], "unet")
    default = resolve(models.get_spec("unet").defaults)
    first = study.trials[0]  # the default goes first, not sampled
    assert first.user_attrs["default"] and search.trial_params(first) == {"lr": default["lr"], "loss": default["loss"]}
    folder = runs / "studies" / "unet"
    assert json.loads((folder / "best_params.json").read_text())["miou"] == out["best"]["miou"]
    assert (folder / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "trials.csv").exists()

    assert main([*args, "--trials", "1"]) == 0  # the same command continues: N more trials
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["trials"] == 3 and out["complete"] == 3
    best_dir = resolve_trial_ref(runs, "best:unet")
    assert best_dir.name == out["best"]["run"]
    assert resolve_trial_ref(runs, "trial:unet:1").name == study_of(out["storage"], "unet").trials[1].user_attrs["run"]
    assert main(["leaderboard", "--runs-dir", str(runs), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(rows) == 3 and {r["kind"] for r in rows} == {"trial"}


def check_workers_result(url: str, name: str, runs: Path, n: int, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    trials = study_of(url, name).trials
    assert len(trials) == n  # exactly the requested count, no overshoot
    assert sorted(t.number for t in trials) == list(range(n))  # unique numbers
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:  # no lost results: each trial's value is its run folder's CV mIoU
        results = json.loads((runs / t.user_attrs["run"] / "results.json").read_text())
        assert results["miou"] == pytest.approx(t.value)
    assert len({t.user_attrs["run"] for t in trials}) == n
    assert "[w0]" in proc.stdout and "[w1]" in proc.stdout


def test_two_workers_on_a_journal_file(sample_root, space_file, tmp_path):
    runs = tmp_path / "runs"
    url = f"journal:{tmp_path / 'journal.log'}"
    proc = cli("search", "unet", "--data", str(sample_root), "--runs-dir", str(runs), "--space", str(space_file),
               "--storage", url, "--workers", "2", "--trials", "4", "--pruner", "wilcoxon", *TINY_ARGS)  # fmt: skip
    check_workers_result(url, "unet", runs, 4, proc)
    trials = study_of(url, "unet").trials  # the per-image reports of the Wilcoxon pruner work on a journal file
    assert all(t.user_attrs["reports"] == "images" and t.intermediate_values for t in trials)


def test_two_workers_on_postgresql(sample_root, space_file, tmp_path, postgres_url):
    runs = tmp_path / "runs"
    name = f"pg-{os.getpid()}-{time.time_ns()}"
    proc = cli("search", "unet", "--data", str(sample_root), "--runs-dir", str(runs), "--space", str(space_file),
               "--storage", postgres_url, "--study", name, "--workers", "2", "--trials", "4", "--pruner", "wilcoxon",
               *TINY_ARGS)  # fmt: skip
    check_workers_result(postgres_url, name, runs, 4, proc)
    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in proc.stdout and password not in proc.stderr  # never print a database password


def test_kill_mid_trial_then_resume(sample_root, space_file, tmp_path):
    """SIGKILL a search worker in the middle of trial 1 (its fold 0 finished), re-run: nothing finished is lost."""
    runs = tmp_path / "runs"
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    args = ["search", "unet", "--data", str(sample_root), "--runs-dir", str(runs), "--space", str(space_file),
            "--storage", url, "--pruner", "none", "--seed", "3", *TINY_ARGS]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "competition", *args, "--trials", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    killed_run = None
    while time.time() < deadline and killed_run is None:
        time.sleep(0.2)
        for run_json in runs.glob("*/run.json"):
            try:
                info = json.loads(run_json.read_text())
            except json.JSONDecodeError:
                continue
            if info.get("trial", {}).get("number") == 1 and (run_json.parent / "fold_0" / "result.json").exists():
                killed_run = run_json.parent
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed_run is not None, "trial 1 never finished its first fold"
    before = study_of(url, "unet").trials
    assert before[0].state == TrialState.COMPLETE and before[1].state == TrialState.RUNNING
    fold0 = (killed_run / "fold_0" / "result.json").read_text()
    for path in killed_run.rglob("*"):  # nothing half-written: every published file is whole
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.name == "best.pt" or path.name == "last.pt":
            torch.load(path, weights_only=True)

    done = cli(*args, "--trials", "2")
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    after = study_of(url, "unet").trials
    assert after[0].value == before[0].value  # the finished trial is untouched
    assert [t.state for t in after] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    retry = after[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == after[1].params
    assert retry.user_attrs["run"] == killed_run.name  # the retry resumed the killed trial's folder
    assert (killed_run / "fold_0" / "result.json").read_text() == fold0  # its finished fold was kept
    assert "fold 0: finished earlier" in done.stdout
    assert json.loads((killed_run / "results.json").read_text())["miou"] == pytest.approx(retry.value)


def test_a_background_only_best_trial_is_called_out(tmp_path):
    from competition.search.summary import summarize_study

    study = optuna.create_study(direction="maximize")
    for value, run in ((0.39, "t0"), (0.08, "t1")):
        trial = optuna.trial.create_trial(value=value, user_attrs={"run": run})
        study.add_trial(trial)
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "results.json").write_text(json.dumps({"background_only": run == "t0"}))
    lines = []
    result = summarize_study(study, "sqlite://", tmp_path / "studies" / "s", lines.append, runs_dir=tmp_path / "runs")
    assert result["best"]["background_only"] is True
    assert any(line.startswith("warning: trial 0 predicts (almost) only background") for line in lines)
