"""Matplotlib without a display: the one place that picks the Agg backend (before pyplot is imported), and
the one way a figure becomes a PNG file (atomic) or PNG bytes. Plotting modules import `plt` from here."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from competition.core.fileio import atomic_path  # noqa: E402

__all__ = ["Figure", "plt", "png_bytes", "save_png"]


def save_png(fig: Figure, path: Path, dpi: int = 100) -> None:
    """Write the figure as a PNG under a temporary name, then rename; the figure is closed."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)


def png_bytes(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()
