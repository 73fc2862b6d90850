"""Search processes started by hand share one study like `--workers N` do: real processes on SQLite, a
journal file and PostgreSQL; and a process killed with SIGKILL mid-trial has that trial retried once by a
survivor, from its last finished fold."""

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
from optuna.trial import TrialState

from competition import search
from tests.conftest import search_inputs

TINY = ["--folds", "2", "--image-size", "32", "--batch-size", "4", "--pruner", "none", "--no-predict",
        "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=0"]  # fmt: skip
SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}}


@pytest.fixture
def setup(tmp_path):
    return search_inputs(tmp_path, SPACE, n_train=10, n_test=4, size=40)


def start(tmp_path: Path, name: str, args: list[str]) -> tuple[subprocess.Popen, Path]:
    """A search process of its own (own session, so a kill reaches only it); its output goes to a file."""
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "competition", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=search.open_storage(url))


def storage_for(kind: str, tmp_path: Path, request) -> str:
    if kind == "sqlite":
        return ""  # the default: runs/optuna.db
    if kind == "journal":
        return f"journal:{tmp_path / 'journal.log'}"
    return request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_plain_processes_share_a_study(kind, setup, tmp_path, request):
    """1 + 2 + 2 trials from three processes started together: exactly 5 COMPLETE, 0 FAIL, one trial 0."""
    data, space = setup
    runs = tmp_path / "runs"
    storage = storage_for(kind, tmp_path, request)
    study = f"plain-{kind}-{os.getpid()}-{time.time_ns()}"
    args = ["search", "unet", "--data", str(data), "--runs-dir", str(runs), "--space", str(space), "--study", study,
            "--epochs", "1", *TINY, *(["--storage", storage] if storage else [])]  # fmt: skip
    procs = [start(tmp_path, f"p{i}", [*args, "--trials", str(n)]) for i, n in enumerate((1, 2, 2))]
    for proc, log in procs:
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    url = storage or f"sqlite:///{(runs / 'optuna.db').resolve()}"
    trials = load(url, study).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5, [t.user_attrs.get("fail_reason") for t in trials]
    assert sum(bool(t.user_attrs.get("default")) for t in trials) == 1  # one trial 0, though all started at once
    assert len({t.user_attrs["run"] for t in trials}) == 5
    for t in trials:  # every value is its own run folder's CV mIoU
        assert json.loads((runs / t.user_attrs["run"] / "results.json").read_text())["miou"] == pytest.approx(t.value)
    logs = "".join(log.read_text() for _, log in procs)
    assert "stale" not in logs and "died" not in logs


def running_trial_of(url: str, study: str, pid: int) -> optuna.trial.FrozenTrial | None:
    if not Path(url.removeprefix("sqlite:///")).exists():
        return None
    try:
        trials = load(url, study).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except KeyError:  # the study does not exist yet
        return None
    return next((t for t in trials if t.user_attrs.get("owner", {}).get("pid") == pid), None)


def test_killed_process_trial_is_retried_once_by_a_survivor(setup, tmp_path):
    data, space = setup
    runs = tmp_path / "runs"
    url = f"sqlite:///{(runs / 'optuna.db').resolve()}"
    args = ["search", "unet", "--data", str(data), "--runs-dir", str(runs), "--space", str(space), "--study", "k",
            "--epochs", "2", *TINY]  # fmt: skip
    victim, _ = start(tmp_path, "victim", [*args, "--trials", "1"])
    survivor, survivor_log = start(tmp_path, "survivor", [*args, "--trials", "3"])
    deadline, killed = time.time() + 600, None
    while time.time() < deadline and killed is None:
        time.sleep(0.3)
        trial = running_trial_of(url, "k", victim.pid)
        if trial and (runs / trial.user_attrs.get("run", "-") / "fold_0" / "result.json").exists():
            killed = trial
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert killed is not None, "the victim never finished a fold"
    run = runs / killed.user_attrs["run"]
    fold0 = (run / "fold_0" / "result.json").read_text()
    assert survivor.wait(timeout=600) == 0, survivor_log.read_text()[-3000:]

    trials = load(url, "k").trials
    states = [t.state for t in trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 3, states
    failed = trials[killed.number]
    assert failed.state == TrialState.FAIL and "its process died" in failed.user_attrs["fail_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1  # retried exactly once
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run"] == run.name  # the same folder
    assert search.trial_params(retry) == search.trial_params(failed)
    assert (run / "fold_0" / "result.json").read_text() == fold0  # its finished fold was kept, not retrained
    log = survivor_log.read_text()
    assert f"trial {killed.number}: its process died" in log and "fold 0: finished earlier" in log
    assert json.loads((run / "results.json").read_text())["miou"] == pytest.approx(retry.value)


def test_a_run_folder_in_use_is_never_trained_twice(tmp_path):
    from competition.core.errors import UserError
    from competition.core.locks import run_folder_lock

    with run_folder_lock(tmp_path / "run"):
        code = "from competition.core.locks import run_folder_lock\nwith run_folder_lock('run'): pass"
        other = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
        assert other.returncode != 0 and "another process is training this run now" in other.stderr
        with pytest.raises(UserError, match="another process"):  # nor by a second lock in this process
            with run_folder_lock(tmp_path / "run"):
                pass
    with run_folder_lock(tmp_path / "run"):  # free again once its owner is done
        pass


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_share_a_study_through_the_grpc_proxy(setup, tmp_path):
    """`storage-proxy` in front of an SQLite study on 127.0.0.1, `search --workers 2` on grpc://: every trial
    complete, stored in the database behind the proxy; the proxy is always stopped."""
    data, space = setup
    runs, port = tmp_path / "runs", free_port()
    proxy, proxy_log = start(tmp_path, "proxy", ["storage-proxy", "--runs-dir", str(runs), "--port", str(port)])
    try:
        args = ["search", "unet", "--data", str(data), "--runs-dir", str(runs), "--space", str(space), "--study",
                "px", "--epochs", "1", *TINY, "--storage", f"grpc://127.0.0.1:{port}", "--trials", "3",
                "--workers", "2"]  # fmt: skip
        worker, log = start(tmp_path, "search", args)
        assert worker.wait(timeout=600) == 0, log.read_text()[-3000:] + proxy_log.read_text()[-2000:]
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
    assert f"storage proxy for sqlite:///{(runs / 'optuna.db').resolve()} on grpc://127.0.0.1:{port}" in (
        proxy_log.read_text()
    )
    trials = load(f"sqlite:///{(runs / 'optuna.db').resolve()}", "px").trials  # the database, not the proxy
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert "worker 1: pid" in log.read_text()


def test_an_unreachable_proxy_is_one_line_and_nothing_runs(setup, tmp_path, capsys):
    from competition.cli import main

    data, space = setup
    port = free_port()  # nobody listens there
    args = ["search", "unet", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--space", str(space),
            "--epochs", "1", *TINY, "--storage", f"grpc://127.0.0.1:{port}", "--trials", "1"]  # fmt: skip
    assert main(args) == 1
    out = capsys.readouterr()
    assert f"--storage grpc://127.0.0.1:{port}: no storage proxy answers there" in out.err
    assert not any((tmp_path / "runs").glob("unet-*")) and not any((tmp_path / "runs").glob("*-t000-*"))
