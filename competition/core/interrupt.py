"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Inside a finaliser (a
garbage-collected database session, a weakref callback) it is printed as "Exception ignored" and dropped, and
the work goes on as if nothing was pressed. While `interrupts()` is active, SIGINT is also recorded, and
`check()`, called at safe points (every training batch and epoch), raises it again when it was lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_pending = False


def _handler(signum, frame) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (and its first delivery was swallowed)."""
    if _pending:
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Record SIGINT for `check()` while the block runs (main thread only); the previous handler after it."""
    global _pending
    _pending = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending = False
