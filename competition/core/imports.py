"""What third-party packages may import in the harness's processes.

timm (under SMP) imports W&B at import time, where it is installed, for the logging of timm's own training
scripts. In the harness that cost every process that builds a model about 0.6 s (benchmarks/bench_startup.py),
and W&B makes two /tmp folders when imported that a process ending without its exit handlers (killed by kill -9
or the OOM killer; a DDP rank whose rank 0 was killed) leaves behind. So timm is told W&B is absent; the W&B
tracker (train/trackers/wandb.py) imports it as usual.
Installed by `competition/__init__.py`, which runs before any module of the harness or of `models`.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

KEPT_FROM = {"wandb": "timm."}  # a module, and the packages whose import of it is refused


class KeepOut(MetaPathFinder):
    """Refuses `import wandb` made by timm's modules (they catch ImportError); every other import passes."""

    def find_spec(self, name: str, path=None, target=None):
        importers = KEPT_FROM.get(name)
        if importers and _importer().startswith(importers):
            raise ModuleNotFoundError(
                f"No module named {name!r} (kept from {importers[:-1]} by the harness)", name=name
            )
        return None


def _importer() -> str:
    """The module whose code runs the import statement being resolved."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
        frame = frame.f_back
    return "" if frame is None else frame.f_globals.get("__name__", "")


def install() -> None:
    if not any(isinstance(finder, KeepOut) for finder in sys.meta_path):
        sys.meta_path.insert(0, KeepOut())
