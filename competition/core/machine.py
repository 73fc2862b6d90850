"""The machine a process runs on: the CPU cores it may use."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask (a container's or taskset's share) where the OS
    has one, else every core; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
