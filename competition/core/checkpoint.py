"""Checkpoints: written atomically, read with `weights_only=True`, every problem one line naming the file.

A checkpoint is a dictionary of tensors and plain values. Loading never runs code from the file (torch's
`weights_only` unpickler refuses anything else), and a file that is truncated, tampered with, or of another
model is a UserError, never a multi-line traceback.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from competition.core.errors import UserError, first_line
from competition.core.fileio import atomic_path


def save_checkpoint(obj: Any, path: Path) -> None:
    """torch.save under a temporary name, then renamed: a kill never leaves half a checkpoint. A full disk
    raises OSError (ENOSPC / EFBIG, naming `path`; torch alone would say `unexpected pos`) and the temporary
    file is removed."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer = _Writer(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            raise OSError(writer.error.errno, writer.error.strerror, str(path)) from None


class _Writer:
    """A file that remembers the OSError of a failed write (torch turns it into a RuntimeError)."""

    def __init__(self, f: Any):
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dictionary saved in `path` (weights_only: plain data and tensors only)."""
    path = Path(path)
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except pickle.UnpicklingError as e:  # weights_only refused an object: code, or a foreign class
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported object"
        raise UserError(f"{path}: refused to load: not a plain weights file ({reason[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = first_line(e, 10_000)
        raise UserError(f"{path}: unreadable checkpoint (truncated or corrupt: {first[:160]})") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a checkpoint of this harness (a {type(saved).__name__}, not a dictionary)")
    return saved


def load_weights(model: torch.nn.Module, saved: dict[str, Any], path: Path) -> None:
    """Load `saved["model"]` into `model`; a checkpoint of another model or class count is one line."""
    state = saved.get("model")
    if not isinstance(state, dict):
        raise UserError(f"{path}: checkpoint has no 'model' state dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    if missing or unexpected or shapes:
        first = (missing + unexpected + shapes)[0]
        raise UserError(
            f"{path}: checkpoint of another model or class count ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(shapes)} mismatched tensors, e.g. {first!r})"
        )
    model.load_state_dict(state)
