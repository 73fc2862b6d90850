"""Study storages by URL: an SQLite file (default, in the runs folder), any RDB URL (PostgreSQL for several
machines, with a heartbeat), or `journal:PATH`; URLs are shown with their password hidden.

A server database that goes away (restarted, a network blip) is waited for: every storage call is retried
for up to DB_RETRY_SECONDS, on fresh connections, before the search stops with one line (and then resumes
when the same command is run again). A locked SQLite file is waited for the same way (SQLite's own timeout).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from competition.core.errors import UserError, first_line
from competition.core.locks import exclusive_lock
from competition.core.redact import redact, redact_url
from competition.search.orphans import retry_trial

HEARTBEAT_SECONDS = 60
DB_RETRY_SECONDS = float(os.environ.get("COMPETITION_DB_RETRY_SECONDS", 300))


def storage_url(spec: str | None, runs_dir: Path) -> str:
    """The storage to use: --storage as given, else an SQLite file in the runs folder."""
    if spec:
        return spec
    runs_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(runs_dir / 'optuna.db').resolve()}"


def safe_url(url: str) -> str:
    """The URL with every credential hidden (core.redact: user info, ?password=, keyword strings), for logs."""
    return url if url.startswith("journal:") else redact_url(url)


PROXY_WAIT_SECONDS = 10.0


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL; server databases get a heartbeat that fails and retries dead trials;
    `grpc://HOST:PORT` is a storage proxy (`./run.sh storage-proxy`) in front of one of them."""
    if url.startswith("grpc://"):
        return open_proxy(url)
    if url.startswith("journal:"):
        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        if url.startswith("sqlite"):  # a locked database file is waited for up to 60 s, then retried as above
            return SqliteStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        # Optuna >= 4.9 names the stale-trial callback `heartbeat_stale_trial_callback`
        params = inspect.signature(optuna.storages.RDBStorage).parameters
        callback = (
            "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
        )
        return RetryingRDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},  # connections broken by a server restart are replaced
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=3 * HEARTBEAT_SECONDS,
            **{callback: retry_trial},
        )
    except Exception as e:  # bad URL, server down, missing driver: one line, no password
        first = redact(first_line(e, 10_000), url)[:200]
        raise UserError(f"--storage {safe_url(url)}: cannot open: {first}") from None


def _lost_connection(e: Exception) -> bool:
    """A server that is down or restarting, or a locked SQLite file, as opposed to a bad request."""
    if isinstance(e, optuna.exceptions.StorageInternalError) and isinstance(e.__cause__, Exception):
        e = e.__cause__  # Optuna wraps what failed in a transaction
    if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return True
    return isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated


def _retrying(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        deadline, delay = time.monotonic() + DB_RETRY_SECONDS, 0.5
        while True:
            try:
                return method(self, *args, **kwargs)
            except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
                if not _lost_connection(e):
                    raise
                if time.monotonic() >= deadline:
                    url = self.engine.url.render_as_string(hide_password=False)
                    first = redact(first_line(e, 10_000), url)[:200]
                    raise UserError(
                        f"--storage {safe_url(url)}: unreachable for {DB_RETRY_SECONDS:g} s "
                        f"({first}); finished trials are stored; re-run the same command to resume"
                    ) from None
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose every call rides out a database restart (see the module docstring)."""


for _name, _method in list(vars(optuna.storages.RDBStorage).items()):
    if not _name.startswith("_") and callable(_method) and _name not in ("remove_session", "upgrade"):
        setattr(RetryingRDBStorage, _name, _retrying(_method))


class SqliteStorage(RetryingRDBStorage):
    """SQLite ignores Optuna's SELECT ... FOR UPDATE, so two processes could both start one waiting trial
    (both read WAITING, both write RUNNING: two workers train trial 0 and the second one's result is refused).
    Starting a trial, and opening the file, are serialised by an OS lock beside the database file."""

    def __init__(self, url: str, **kwargs):
        database = make_url(url).database
        on_disk = bool(database) and database != ":memory:"
        self._start_lock = Path(f"{database}.start.lock") if on_disk else None
        # two processes creating one new file would both write its schema version (UNIQUE constraint failed:
        # alembic_version): whoever opens it (a search, the dashboard, the report) does so one at a time
        with exclusive_lock(self._start_lock) if on_disk else contextlib.nullcontext():
            super().__init__(url, **kwargs)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        if state != TrialState.RUNNING or self._start_lock is None:
            return super().set_trial_state_values(trial_id, state, values)
        with exclusive_lock(self._start_lock):
            return super().set_trial_state_values(trial_id, state, values)


def open_proxy(url: str) -> optuna.storages.BaseStorage:
    """A client of Optuna's gRPC storage proxy at grpc://HOST:PORT, once it answers (UserError else)."""
    host, _, port = url[len("grpc://") :].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--storage {url}: expected grpc://HOST:PORT")
    with warnings.catch_warnings():  # experimental since Optuna 4.2: the pinned version is the tested one
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    try:
        proxy.wait_server_ready(timeout=PROXY_WAIT_SECONDS)
    except Exception as e:
        proxy.close()
        raise UserError(f"--storage {url}: no storage proxy answers there within {PROXY_WAIT_SECONDS:g} s "
                        f"({first_line(e, 120)}); start one with ./run.sh storage-proxy --storage URL --port "
                        f"{port}") from None  # fmt: skip
    return proxy


def serve_proxy(url: str, host: str, port: int, log) -> None:
    """Optuna's gRPC storage proxy in front of storage `url`, until Ctrl-C: many workers, one database client."""
    if url.startswith(("grpc://", "journal:")):
        raise UserError(f"--storage {url}: a proxy serves a database (sqlite, postgresql), not a journal or a proxy")
    storage = optuna.storages.get_storage(open_storage(url))  # Optuna's in-process cache in front of the RDB
    log(f"storage proxy for {safe_url(url)} on grpc://{host}:{port} (workers: --storage grpc://{host}:{port}); "
        "Ctrl-C stops it")  # fmt: skip
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    try:
        optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)
    except RuntimeError as e:  # the port is taken
        raise UserError(f"--port {port}: cannot serve on {host}:{port} ({first_line(e, 120)})") from None
