"""`dashboard`: optuna-dashboard (the pinned package, served by the standard library's threaded WSGI server) on
the study storage a search uses, bound to 127.0.0.1 only.

The storage is opened as the search opens it (competition.search.open_storage): SQLite with a 60 s busy
timeout, so a dashboard reading a study while a search writes to it waits for the writer's lock instead of
failing either side with 'database is locked'.
"""

from __future__ import annotations

import errno
import signal
import socketserver
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from competition.core.errors import UserError
from competition.core.log import Log
from competition.search import open_storage, safe_url

HOST = "127.0.0.1"


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # requests in flight do not keep Ctrl-C from ending the process


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass  # one line per request would drown the URL the user needs


def dashboard_storage(runs_dir: Path, storage: str | None) -> str:
    """--storage as given, else the runs folder's SQLite file, which must exist (a search makes it)."""
    if storage:
        return storage
    db = Path(runs_dir) / "optuna.db"
    if not db.is_file():
        raise UserError(f"{db}: no study storage yet; ./run.sh search MODEL makes one, or give --storage URL")
    return f"sqlite:///{db.resolve()}"


def serve_dashboard(runs_dir: Path, storage: str | None, port: int, log: Log = print) -> None:
    """Serve optuna-dashboard until Ctrl-C (KeyboardInterrupt), then close the socket and return."""
    try:  # imported here: every other command runs without it (a bare GPU machine has no optuna-dashboard)
        import optuna_dashboard
    except ImportError:
        raise UserError(
            "dashboard needs the optuna-dashboard package: ./run.sh setup, "
            "or `pip install -c requirements.lock optuna-dashboard`"
        ) from None
    url = dashboard_storage(runs_dir, storage)
    store = open_storage(url)
    studies = optuna.study.get_all_study_names(store)
    app = optuna_dashboard.wsgi(store)
    try:
        server = make_server(HOST, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: {HOST}:{port} is already in use; choose another port") from None
        raise UserError(f"--port {port}: cannot listen on {HOST}:{port}: {e.strerror}") from None
    address = f"http://{HOST}:{server.server_port}/dashboard/"
    log(f"optuna-dashboard {optuna_dashboard.__version__} on {safe_url(url)} ({len(studies)} studies)")
    log(f"open {address}  (Ctrl-C stops it)")
    # Ctrl-C stops it even where the shell started it with SIGINT ignored (in the background); so does SIGTERM
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    log("dashboard stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
