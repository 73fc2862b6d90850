"""The report's pictures, as base64 PNG data URIs: a confusion matrix, the worst validation images with
prediction overlays, the CV-vs-LB scatter; and PNG files already in run folders."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Patch
from PIL import Image

from competition.core.geometry import SUBMISSION_SIZE
from competition.core.plotting import Figure, plt, png_bytes
from competition.data import read_image
from competition.report.oof import OofAnalysis
from competition.train import palette


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_uri(fig: Figure, dpi: int = 80) -> str:
    """The figure as an inline PNG; the figure is closed."""
    return data_uri(png_bytes(fig, dpi))


def file_uri(path: Path) -> str | None:
    """A PNG file of a run folder, inline; None when it is not there."""
    return data_uri(path.read_bytes()) if path.is_file() else None


def confusion_uri(analysis: OofAnalysis) -> str:
    """Row-normalised confusion matrix (share of each true class's pixels predicted as each class)."""
    cm = analysis.confusion.astype(np.float64)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    names = list(analysis.classes.names)
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.45 * n + 3, 0.45 * n + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(share):
        if cm[i].sum() and v >= 0.005:
            ax.text(j, i, f"{v:.2f}"[1:] if v < 1 else "1", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), [f"{nm} ({int(cm[i].sum()):,} px)" for i, nm in enumerate(names)], fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=f"out-of-fold confusion ({analysis.images} images, row shares)")
    return figure_uri(fig)


def worst_uri(analysis: OofAnalysis) -> str | None:
    """image | truth | prediction of the worst validation images, one row each."""
    if not analysis.worst:
        return None
    colours = palette(analysis.classes.num_classes)
    ignore = analysis.classes.ignore_index
    coco = analysis.root.coco("train_all")
    fig, axes = plt.subplots(len(analysis.worst), 3, figsize=(7.5, 2.6 * len(analysis.worst)), squeeze=False)
    for row, w in zip(axes, analysis.worst, strict=True):
        picture = read_image(analysis.root.root, w.image, coco.path).resize((SUBMISSION_SIZE,) * 2, Image.BILINEAR)
        rgb = np.asarray(picture, dtype=np.float64) / 255
        truth = np.where(w.truth == ignore, 0, w.truth)
        truth_rgb = np.where((w.truth == ignore)[..., None], 1.0, colours[truth])
        panels = (rgb, 0.45 * rgb + 0.55 * truth_rgb, 0.45 * rgb + 0.55 * colours[w.pred])
        titles = (f"{w.image.file_name}", "truth", f"prediction (mIoU {w.miou:.3f})")
        for ax, panel, title in zip(row, panels, titles, strict=True):
            ax.imshow(panel)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    present = sorted(set().union(*(np.unique(w.truth).tolist() + np.unique(w.pred).tolist() for w in analysis.worst)))
    handles = [
        Patch(color=colours[c], label=analysis.classes.names[c]) for c in present if c < analysis.classes.num_classes
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    return figure_uri(fig)


def scatter_uri(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    """CV mIoU against public LB, one point per scored run, with y = x."""
    scored = [r for r in rows if r.get("lb_public") is not None]
    cv = np.array([r["miou"] for r in scored])
    lb = np.array([r["lb_public"] for r in scored])
    fig, ax = plt.subplots(figsize=(6, 5))
    kinds = sorted({r["kind"] for r in scored})
    for kind, marker in zip(kinds, "osD^v", strict=False):
        pick = [i for i, r in enumerate(scored) if r["kind"] == kind]
        ax.scatter(cv[pick], lb[pick], marker=marker, label=kind)
    for r, x, y in zip(scored, cv, lb, strict=True):
        ax.annotate(r["run"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    low, high = float(min(cv.min(), lb.min())), float(max(cv.max(), lb.max()))
    pad = max(0.01, 0.05 * (high - low))
    ax.plot([low - pad, high + pad], [low - pad, high + pad], ":", color="grey", label="CV = LB")
    tau = summary.get("kendall_tau")
    gap = summary.get("mean_gap")
    title = f"CV vs public LB ({len(scored)} scored)"
    if tau is not None:
        title += f": Kendall tau {tau:+.2f}, mean gap {gap:+.4f}"
    ax.set(xlabel="CV mIoU", ylabel="public LB mIoU", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_uri(fig)
