"""The logger type every long operation takes: a function that prints one line (cli.output makes it)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]
