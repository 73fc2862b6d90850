"""Study storages by URL: an SQLite file (default, in the runs folder), any RDB URL (PostgreSQL for several
machines, with a heartbeat), or `journal:PATH`; URLs are shown with their password hidden.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url

from competition.core.errors import UserError
from competition.search.orphans import retry_trial

HEARTBEAT_SECONDS = 60


def storage_url(spec: str | None, runs_dir: Path) -> str:
    """The storage to use: --storage as given, else an SQLite file in the runs folder."""
    if spec:
        return spec
    runs_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(runs_dir / 'optuna.db').resolve()}"


def safe_url(url: str) -> str:
    """The URL with any password hidden, for logs and JSON."""
    if url.startswith("journal:"):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: show only its scheme
        return url.split(":", 1)[0] + ":***"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for a URL; server databases get a heartbeat that fails and retries dead trials."""
    if url.startswith("journal:"):
        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        if url.startswith("sqlite"):
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        # Optuna >= 4.9 names the stale-trial callback `heartbeat_stale_trial_callback`
        params = inspect.signature(optuna.storages.RDBStorage).parameters
        callback = (
            "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"
        )
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS, **{callback: retry_trial}
        )
    except Exception as e:  # bad URL, server down, missing driver: one line, no password
        raise UserError(f"--storage {safe_url(url)}: cannot open: {str(e).splitlines()[0][:200]}") from None
