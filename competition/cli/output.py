"""Where a command's output goes: log lines to stdout (stderr under --json), and under --json exactly one
JSON object on stdout, from this process and any worker process it starts."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from competition.core.log import Log
from competition.core.progress import write

_json_out: list[Any] = []  # where --json results go: the real stdout, while everything else goes to stderr


def logger(args: argparse.Namespace) -> Log:
    """One line per message, flushed: stdout, or stderr under --json (above any progress bars)."""
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout

    def log(msg: str) -> None:
        write(msg, stream)

    return log


def emit_json(obj: Any) -> None:
    """The command's JSON result, on the real stdout."""
    stream = _json_out[-1] if _json_out else sys.stdout
    print(json.dumps(obj, default=str), file=stream, flush=True)


@contextlib.contextmanager
def json_stdout() -> Iterator[None]:
    """Under --json, only the final JSON reaches stdout: from here on stdout (file descriptor 1, inherited by
    worker processes, and sys.stdout) points to stderr; emit_json writes to the saved real stdout."""
    real = sys.stdout
    try:
        fd = real.fileno()
    except (AttributeError, OSError, ValueError):  # a captured or replaced stdout: swap the Python objects only
        fd = None
    if fd is None:
        _json_out.append(real)
        sys.stdout = sys.stderr
        try:
            yield
        finally:
            sys.stdout = real
            _json_out.pop()
        return
    real.flush()
    saved = os.dup(fd)
    os.dup2(sys.stderr.fileno(), fd)
    out = os.fdopen(os.dup(saved), "w")
    _json_out.append(out)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)
        _json_out.pop()
        out.close()
