"""Validation of a fold: scores at 256 x 256 over the whole fold, validation loss, and (for the kept
checkpoint) the out-of-fold probabilities and prediction overlays.
"""

from __future__ import annotations

from pathlib import Path

import torch

from competition.data import SegmentationDataset
from competition.predict import describe_views, parse_tta, predict_probs, write_probs
from competition.submit import MeanIoU, Scores
from competition.train.plots import save_overlays
from competition.train.setup import Setup


@torch.no_grad()
def evaluate(
    model,
    loader,
    setup: Setup,
    oof_dir: Path | None = None,
    val_set: SegmentationDataset | None = None,
    metric: MeanIoU | None = None,
) -> tuple[Scores, float]:
    """Scores at 256 x 256 over the whole validation fold (one confusion matrix, per-image mIoU) and the
    validation cross-entropy; with `oof_dir`, also the fold's out-of-fold probabilities and overlays. `metric`:
    the accumulator to fill (e.g. one that keeps every image's confusion matrix), else a fresh one."""
    cfg, device, classes = setup.cfg, setup.device, setup.classes
    model.eval()
    metric = metric or MeanIoU(classes.num_classes, classes.ignore_index, device=device)
    nll, pixels = 0.0, 0
    views = parse_tta(cfg["val_tta"])  # validation sees the views the test set will (out-of-fold too)
    writer = None
    if oof_dir is not None:
        images = [im.file_name for im in val_set.images]
        meta = {"member": str(oof_dir), "tta": describe_views(views)}
        writer = write_probs(oof_dir / "oof.npy", images, list(classes.names), **meta)
    overlays = int(cfg["overlays"]) if oof_dir is not None else 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        probs = predict_probs(model, images, views, amp=cfg["amp"], channels_last=cfg["channels_last"])
        pred = probs.max(1).indices  # argmax's first-maximum ties, 6x faster than argmax(1) over NCHW on a CPU
        metric.update(pred, targets)
        valid = targets != classes.ignore_index
        truth = probs.gather(1, targets.clamp(0, classes.num_classes - 1)[:, None])[:, 0]  # log of one class only
        nll -= truth.clamp_min(1e-8).log()[valid].sum().item()
        pixels += int(valid.sum())
        if writer is not None:
            writer.write(probs)
        if overlays > 0:
            take = min(overlays, len(images))
            shown = int(cfg["overlays"]) - overlays
            save_overlays(
                images[:take],
                targets[:take],
                pred[:take],
                classes.num_classes,
                oof_dir,
                shown,
                classes.ignore_index,
            )
            overlays -= take
    if writer is not None:
        writer.close()
    return metric.compute(), nll / max(1, pixels)
