"""PNG plots for run folders: learning curves, per-class IoU bars, prediction overlays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from competition.core.plotting import plt, save_png
from competition.data import MEAN, STD


def learning_curves(history: pd.DataFrame, path: Path) -> None:
    """Training/validation loss and validation mIoU per epoch, one line per fold."""
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(11, 4))
    for fold, rows in history.groupby("fold"):
        dot = "." if len(rows) < 20 else ""  # a run of one epoch is a point, not a line
        ax_loss.plot(rows["epoch"], rows["train_loss"], dot + "-", label=f"fold {fold} train")
        rows = rows.dropna(subset=["miou_image"])  # validated epochs only (val_every)
        dot = "." if len(rows) < 20 else ""
        ax_loss.plot(rows["epoch"], rows["val_loss"], dot + "--", label=f"fold {fold} val")
        ax_iou.plot(rows["epoch"], rows["miou_image"], dot + "-", label=f"fold {fold} per-image")
        ax_iou.plot(rows["epoch"], rows["miou_dataset"], dot + ":", label=f"fold {fold} dataset")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_iou.set(xlabel="epoch", ylabel="mIoU", title="validation mIoU (256x256)")
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_png(fig, path)


def per_class_bars(names: list[str], ious: list[float], path: Path, title: str = "per-class IoU (CV mean)") -> None:
    """Horizontal bars of IoU per class; classes never seen are marked n/a."""
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    values = [0.0 if v is None or math.isnan(v) else v for v in ious]
    ax.barh(range(len(names)), values, color="tab:blue")
    for i, v in enumerate(ious):
        ax.text(values[i] + 0.01, i, "n/a" if v is None or math.isnan(v) else f"{v:.3f}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.1), xlabel="IoU", title=title)
    save_png(fig, path)


def palette(n: int) -> np.ndarray:
    """A fixed colour per class value (0 = black); ignore pixels are drawn white."""
    colours = plt.get_cmap("tab20")(np.arange(max(n, 1)) % 20)[:, :3]
    colours[0] = 0
    return colours


def save_overlays(
    images: torch.Tensor,
    targets: torch.Tensor,
    preds: torch.Tensor,
    num_classes: int,
    out_dir: Path,
    start: int = 0,
    ignore_index: int = 255,
) -> None:
    """image | ground truth | prediction panels (classes coloured over the image), one overlay_<n>.png each."""
    colours = palette(num_classes)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    size = targets.shape[-2:]
    small = torch.nn.functional.interpolate(images.float().cpu(), size=size, mode="bilinear", align_corners=False)
    for i in range(len(images)):
        rgb = (small[i] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        gt, pred = targets[i].cpu().numpy(), preds[i].cpu().numpy()
        ignored = (gt == ignore_index)[..., None]
        gt_rgb = np.where(ignored, 1.0, colours[np.where(gt == ignore_index, 0, gt)])
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
        panels = (rgb, 0.45 * rgb + 0.55 * gt_rgb, 0.45 * rgb + 0.55 * colours[pred])
        for ax, picture, title in zip(axes, panels, ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        save_png(fig, Path(out_dir) / f"overlay_{start + i}.png")
