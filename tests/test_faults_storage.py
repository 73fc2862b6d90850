"""Fault table, storage: PostgreSQL restarted mid-search, a wrong password, a locked SQLite file, and damaged
cache entries (masks, folds), which are detected and rebuilt."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from competition.cli import main
from competition.core.errors import UserError
from competition.data import DataRoot, make_folds
from competition.search import open_storage
from competition.search import storage as storage_module
from tests.conftest import build_root, search_inputs

TINY = ["--folds", "2", "--epochs", "2", "--image-size", "32", "--batch-size", "2", "--device", "cpu",
        "--pruner", "none", "--no-predict", "--set", "encoder=resnet18", "--set", "num_workers=0",
        "--set", "overlays=0"]  # fmt: skip


@pytest.fixture
def search_args(tmp_path):
    data, space = search_inputs(tmp_path, n_train=8, n_test=2, size=32)
    return ["search", "unet", "--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--space", str(space), *TINY]


def files_containing(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_restart_mid_search_loses_no_trial(postgres_url, search_args, tmp_path):
    """The server is restarted (every connection cut) while trial 0 trains: the search waits, reconnects and
    finishes; the trial is COMPLETE; the password is nowhere in the output or the runs folder."""
    if os.environ.get("COMPETITION_TEST_POSTGRES"):
        pytest.skip("the CI server cannot be restarted from a test")
    data_dir = Path(f"/tmp/competition-test-pg-{os.getpid()}")  # where conftest.postgres_url started it
    script = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"
    study = f"restart-{os.getpid()}-{time.time_ns()}"
    runs = tmp_path / "runs"
    log = tmp_path / "search.log"
    args = [*search_args, "--storage", postgres_url, "--study", study, "--trials", "1"]
    env = {**os.environ, "COMPETITION_DB_RETRY_SECONDS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "competition", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(runs.glob(f"{study}-t000-*/fold_0/result.json")):
            time.sleep(0.2)
        restarted = subprocess.run([str(script), "restart", str(data_dir)], capture_output=True, text=True, cwd="/")
        assert restarted.returncode == 0, restarted.stderr
        assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    trials = optuna.load_study(study_name=study, storage=open_storage(postgres_url)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE], log.read_text()[-3000:]
    for t in trials:
        assert json.loads((runs / t.user_attrs["run"] / "results.json").read_text())["miou"] == pytest.approx(t.value)
    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in log.read_text() and files_containing(runs, password) == []


def test_wrong_password_is_one_line_without_it(postgres_url, search_args, tmp_path, capsys):
    wrong = "Wrong-Pass-31337"
    user, rest = postgres_url.split("://", 1)[1].split(":", 1)
    url = f"postgresql://{user}:{wrong}@{rest.split('@', 1)[1]}"
    code = main([*search_args, "--storage", url, "--trials", "1"])
    captured = capsys.readouterr()
    err = [line for line in captured.err.strip().splitlines() if line.startswith("error:")]
    assert code == 1 and len(err) == 1 and "cannot open" in err[0] and "***" in err[0], captured.err
    assert wrong not in captured.err + captured.out and files_containing(tmp_path / "runs", wrong) == []


def test_unreachable_server_is_one_line_without_the_password(search_args, tmp_path, capsys):
    """No server needed: a closed port on loopback."""
    code = main([*search_args, "--storage", "postgresql://u:Top-Secret-77@127.0.0.1:9/db", "--trials", "1"])
    captured = capsys.readouterr()
    assert code == 1 and captured.err.strip().splitlines()[-1].startswith("error: --storage postgresql://u:***@")
    assert "Top-Secret-77" not in captured.err + captured.out
    assert files_containing(tmp_path / "runs", "Top-Secret-77") == []


def test_storage_calls_ride_out_a_lost_connection(monkeypatch, tmp_path):
    """Unit: a storage call failing with a lost connection is retried until it works, and ends in one line
    after DB_RETRY_SECONDS; other database errors are not retried."""
    storage = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    failures = [sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))] * 2
    real = optuna.storages.RDBStorage.get_all_studies
    calls = []

    def flaky(self):
        calls.append(1)
        if len(calls) <= len(failures):
            raise optuna.exceptions.StorageInternalError("commit failed") from failures[0]
        return real(self)

    monkeypatch.setattr(storage_module.RetryingRDBStorage, "get_all_studies", storage_module._retrying(flaky))
    monkeypatch.setattr(storage_module.time, "sleep", lambda s: None)
    assert storage.get_all_studies() == [] and len(calls) == 3
    monkeypatch.setattr(storage_module, "DB_RETRY_SECONDS", 0.0)
    calls.clear()
    with pytest.raises(UserError, match=r"unreachable for 0 s .*re-run the same command to resume"):
        storage.get_all_studies()

    def broken(self):
        raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    monkeypatch.setattr(storage_module.RetryingRDBStorage, "get_all_studies", storage_module._retrying(broken))
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        storage.get_all_studies()


# --------------------------------------------------------------------------- SQLite


def test_locked_sqlite_file_is_waited_for(tmp_path):
    path = tmp_path / "optuna.db"
    url = f"sqlite:///{path}"
    optuna.create_study(storage=open_storage(url), study_name="s")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing for a long time
    release = threading.Timer(2.0, lambda: holder.execute("COMMIT"))
    start = time.monotonic()
    release.start()
    try:
        study = optuna.load_study(study_name="s", storage=open_storage(url))
        study.enqueue_trial({"x": 1})
    finally:
        release.join()
        holder.close()
    assert time.monotonic() - start >= 1.8  # it waited for the lock instead of failing
    assert len(optuna.load_study(study_name="s", storage=open_storage(url)).trials) == 1


# --------------------------------------------------------------------------- caches


def _flip_a_byte(folder: Path) -> None:
    path = folder / "masks.u8"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


MASK_DAMAGE = {
    "flipped byte": (_flip_a_byte, "checksum mismatch"),
    "truncated mask file": (lambda f: os.truncate(f / "masks.u8", 100), "mask file has 100 bytes"),
    "truncated index": (lambda f: (f / "index.json").write_text('{"images": [[1'), "unreadable"),
    "mask file missing": (lambda f: (f / "masks.u8").unlink(), "unreadable"),
}


@pytest.mark.parametrize("case", list(MASK_DAMAGE))
def test_damaged_mask_cache_entry_is_rebuilt(case, tmp_path):
    damage, reason = MASK_DAMAGE[case]
    data = DataRoot(build_root(tmp_path / "data"))
    classes = data.classes()
    store = data.masks("train_all", classes)
    ids = data.coco("train_all").image_ids
    original = {i: store[i].copy() for i in ids}
    damage(store.folder)
    logged: list[str] = []
    again = DataRoot(data.root).masks("train_all", classes, log=logged.append)
    assert again.folder == store.folder and any(f"damaged ({reason}" in m for m in logged), logged
    assert all(np.array_equal(again[i], original[i]) for i in ids)
    assert [p.name for p in again.folder.parent.iterdir()] == [again.folder.name]  # nothing left aside
    logged.clear()
    DataRoot(data.root).masks("train_all", classes, log=logged.append)
    assert logged == []  # healthy now: read, not rendered


@pytest.mark.parametrize("damage", ["not json {", '{"folds": [[10], [3]]}', '{"folds": "x"}'])
def test_damaged_fold_file_is_recomputed(damage, tmp_path):
    data = DataRoot(build_root(tmp_path / "data"))
    folds = make_folds(data, "kfold", 2, 42)
    folds.path.write_text(damage)
    again = make_folds(DataRoot(data.root), "kfold", 2, 42)
    assert again.val_ids == folds.val_ids
