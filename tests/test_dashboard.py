"""`dashboard`: optuna-dashboard on the study storage, on 127.0.0.1; it lists the studies, Ctrl-C stops it
cleanly, a port in use is a one-line error, and a search writing to the same SQLite study while the dashboard
is polled hard finishes without 'database is locked'."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from competition.data import write_sample_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--epochs", "2", "--folds", "2", "--image-size", "32", "--batch-size", "4",
             "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=0"]  # fmt: skip


def competition(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "competition", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, **kw,
    )  # fmt: skip


class Dashboard:
    """A `dashboard --port 0` process, its URL, and its output lines as they come."""

    def __init__(self, *args: str):
        self.proc = competition("dashboard", "--port", "0", *args)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout], daemon=True).start()
        self.url = ""
        deadline = time.time() + 120
        while not self.url:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                self.stop()
                pytest.fail(f"dashboard did not start: {self.proc.stderr.read()[-2000:]}")
            if line.startswith("open http://127.0.0.1:"):
                self.url = line.split()[1].removesuffix("/dashboard/")

    def get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.status, response.read()

    def studies(self) -> list[str]:
        status, body = self.get("/api/studies")
        assert status == 200
        return [s["study_name"] for s in json.loads(body)["study_summaries"]]

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C; the exit code, the rest of stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        time.sleep(0.2)
        while not self.lines.empty():
            rest.append(self.lines.get())
        return code, "".join(rest), self.proc.stderr.read()


def toy_study(runs: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="toy", storage=f"sqlite:///{runs / 'optuna.db'}", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)


def test_dashboard_lists_studies_and_stops_cleanly_on_ctrl_c(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    toy_study(runs)
    dash = Dashboard("--runs-dir", str(runs))
    try:
        assert dash.url.startswith("http://127.0.0.1:")
        assert dash.studies() == ["toy"]
        status, page = dash.get("/dashboard/")
        assert status == 200 and b"<html" in page.lower()
        status, body = dash.get("/api/studies/1")
        assert status == 200 and len(json.loads(body)["trials"]) == 3
    finally:
        code, out, err = dash.stop()
    assert code == 0, err
    assert out.strip().endswith("dashboard stopped") and "Traceback" not in err


def test_port_in_use_and_missing_storage_are_one_line_errors(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    toy_study(runs)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = competition("dashboard", "--port", str(port), "--runs-dir", str(runs))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert err == f"error: --port {port}: 127.0.0.1:{port} is already in use; choose another port\n"
    proc = competition("dashboard", "--runs-dir", str(tmp_path / "none"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and err.count("\n") == 1 and "no study storage yet" in err


def test_a_search_writing_to_the_study_survives_a_dashboard_polling_it(tmp_path):
    data = write_sample_dataset(tmp_path / "sample", n_train=10, n_test=4, size=40)
    runs = tmp_path / "runs"
    search = competition(
        "search", "unet", "--data", str(data), "--runs-dir", str(runs), "--trials", "3", "--pruner", "median",
        "--no-predict", "--seed", "1", *TINY_ARGS, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.time() + 300
    while not list(runs.glob("*/run.json")):  # the study exists once its first trial has a run folder
        assert search.poll() is None, search.communicate()[1][-2000:]
        assert time.time() < deadline, "the search started no trial"
        time.sleep(0.5)
    dash = Dashboard("--runs-dir", str(runs))
    polls, failures = 0, []
    try:
        while search.poll() is None:
            for path in ("/api/studies", "/api/studies/1"):
                try:
                    status, _ = dash.get(path)
                    polls += 1
                    if status != 200:
                        failures.append(f"{path}: {status}")
                except OSError as e:  # an HTTP 500 (database is locked) lands here
                    failures.append(f"{path}: {e}")
            assert time.time() < deadline + 300, "the search did not finish"
        seen = dash.studies()
    finally:
        code, _, dash_err = dash.stop()
    out, err = search.communicate()
    assert search.returncode == 0, err[-3000:]
    assert "database is locked" not in err + dash_err
    assert failures == [] and polls >= 10
    assert seen == ["unet"] and code == 0
    trials = optuna.load_study(study_name="unet", storage=f"sqlite:///{runs / 'optuna.db'}").trials
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
