"""A dashboard reading a SQLite study while a search-like writer writes to it: HTTP errors on the dashboard's
side and the writer's fate, for the stock `optuna-dashboard URL` command and for `./run.sh dashboard`.

The writer runs trials that report 10 intermediate values each (12 commits per trial, as fast as SQLite takes
them) through competition.search.open_storage, as `search` does; 4 threads poll /api/studies/1 meanwhile.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_dashboard.py [--seconds 40] [--trials 150]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import optuna

from competition.search import open_storage

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def write_trials(url: str, n: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize", load_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(10):
            trial.report(x * step, step)
        return x

    study.optimize(objective, n_trials=n)


def poll(base: str, seconds: float, threads: int = 4) -> tuple[int, int]:
    ok, errors = [0], [0]
    stop = time.time() + seconds

    def loop() -> None:
        while time.time() < stop:
            try:
                with urllib.request.urlopen(base + "/api/studies/1", timeout=60) as response:
                    response.read()
                ok[0] += 1
            except OSError:
                errors[0] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return ok[0], errors[0]


def wait_for(base: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/api/studies", timeout=5).read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{base}: the dashboard did not answer")


def arm(name: str, folder: Path, port: int, seconds: float, trials: int) -> str:
    db = folder / ("stock.db" if name == "stock" else "ours.db")
    url = f"sqlite:///{db}"
    write_trials(url, 5)  # the study exists before the dashboard opens it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if name == "stock":
        cmd = [str(BIN / "optuna-dashboard"), url, "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "competition", "dashboard", "--storage", url, "--port", str(port)]
    dash = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(base)
        writer = subprocess.Popen(
            [sys.executable, "-c", f"import bench_dashboard as b; b.write_trials({url!r}, {trials})"],
            cwd=Path(__file__).parent, env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        start = time.time()
        ok, errors = poll(base, seconds)
        writer_err = writer.communicate()[1]
        took = time.time() - start
    finally:
        dash.send_signal(signal.SIGINT)
        try:
            dash_err = dash.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:  # the stock server under a shell that ignores SIGINT (a background job)
            dash.kill()
            dash_err = dash.communicate()[1]
    locked = dash_err.count("database is locked") + dash_err.count("StorageInternalError")
    return f"{name:<22} {ok:>6} {errors:>7} {locked:>15}  writer exit {writer.returncode} after {took:.0f} s" + (
        f" ({writer_err.strip().splitlines()[-1][:80]})" if writer.returncode else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--trials", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'dashboard':<22} {'polls':>6} {'errors':>7} {'storage errors':>15}")
        print(arm("stock", Path(tmp), 18531, args.seconds, args.trials))
        print(arm("./run.sh dashboard", Path(tmp), 18532, args.seconds, args.trials))


if __name__ == "__main__":
    main()
