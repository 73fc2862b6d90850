"""Test-set prediction of a trained run: every fold's best checkpoint, with optional test-time augmentation.

Softmax probabilities are averaged over the TTA views and the folds (soft voting), stored as float16 at
256 x 256 in `runs/<id>/test/probs.npy` (with its manifest) for ensembling, and their argmax becomes
`submissions/<name>.csv` (with a `.json` sidecar). The CSV holds the competition's class values (every
category kept), whatever class policy (ignore, merge) the run trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import models
from competition.core.checkpoint import load_checkpoint, load_weights
from competition.core.errors import UserError
from competition.core.fileio import read_json
from competition.core.log import Log
from competition.core.runs import now, read_run
from competition.data import ClassTable, DataRoot, SegmentationDataset, eval_transform
from competition.predict.inference import View, describe_views, parse_tta, pick_device, predict_probs
from competition.predict.probs import ProbsWriter, write_probs
from competition.submit import (
    SUBMISSIONS,
    check_name,
    save_submission,
    submission_values,
)


def fold_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(fold, best.pt) of every fold of the run that has a best checkpoint, by fold; UserError if none has."""
    found = sorted((int(p.parent.name.split("_")[1]), p) for p in Path(run_dir).glob("fold_*/best.pt"))
    if not found:
        raise UserError(
            f"{run_dir}: no fold checkpoints (fold_*/best.pt); a pruned trial or an unfinished run has none"
        )
    return found


def run_classes(run_dir: Path, cfg: dict[str, Any], data: DataRoot) -> ClassTable:
    """The dataset's class table under the run's settings; UserError unless the run was trained with it."""
    classes = data.classes(cfg["classes"], cfg["ignore_index"])
    trained = list(read_run(run_dir).get("classes", []))
    if trained != list(classes.names):
        raise UserError(
            f"{run_dir}: trained with classes {trained}, but {data.root} gives {list(classes.names)} "
            "under the run's class settings"
        )
    return classes


def load_fold_model(cfg: dict[str, Any], checkpoint: Path, num_classes: int, device: torch.device) -> torch.nn.Module:
    """The run's model with a fold's best weights, in eval mode on `device`."""
    model, _ = models.create_model(cfg["model"], num_classes, cfg | {"weights": None, "encoder_weights": None})
    load_weights(model, load_checkpoint(checkpoint, device), checkpoint)
    model = model.to(device).eval()
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


def test_loader(root: DataRoot, cfg: dict[str, Any], batch_size: int, device: torch.device) -> DataLoader:
    """The test images of test.json in order, prepared as the run's validation images were."""
    test = root.coco("test")
    dataset = SegmentationDataset(root.root, test.path, test.images, None, eval_transform(cfg), "predict")
    workers = int(cfg["num_workers"])
    return DataLoader(dataset, batch_size, num_workers=workers, pin_memory=device.type == "cuda")


def predict_batches(
    nets: list[torch.nn.Module], loader: DataLoader, writer: ProbsWriter, views: list[View], cfg: dict[str, Any]
) -> list[np.ndarray]:
    """Write the fold- and view-averaged probabilities of every batch (float16); return their argmax masks."""
    device = next(nets[0].parameters()).device
    masks: list[np.ndarray] = []
    try:
        for images, _ in tqdm(loader, desc="predict", leave=False, dynamic_ncols=True, disable=None):
            images = images.to(device)
            total = sum(predict_probs(net, images, views, cfg["amp"], cfg["channels_last"]) for net in nets)
            probs = (total / len(nets)).half()
            writer.write(probs)
            masks.extend(probs.float().argmax(1).to("cpu", torch.uint8).numpy())  # the argmax of what is stored
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return masks


def predict_run(
    run_dir: Path,
    data: str | None = None,
    tta: str | None = None,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    out_dir: Path = SUBMISSIONS,
    log: Log = print,
) -> dict[str, Any]:
    """Test probabilities of every fold of a run and its submission CSV; returns where they went.

    `settings`: the run's settings to override for prediction (config.PREDICTION_KEYS: batch size, device,
    workers, amp, channels_last); the device is `auto` unless given.
    """
    run_dir = Path(run_dir)
    settings = settings or {}
    cfg = read_json(run_dir / "config.json") | settings
    checkpoints = fold_checkpoints(run_dir)
    status = read_run(run_dir).get("status")
    if status != "complete":
        log(f"warning: run {run_dir.name} is {status}; predicting with the {len(checkpoints)} checkpoints it has")
    root = DataRoot(Path(data or cfg["data"]))
    classes = run_classes(run_dir, cfg, root)
    views = parse_tta(tta)
    tta_names = describe_views(views)
    name = check_name(name or run_dir.name + ("-tta" if tta_names else ""))
    torch_device = pick_device(settings.get("device", "auto"))
    nets = [load_fold_model(cfg, path, classes.num_classes, torch_device) for _, path in checkpoints]
    ids = [im.file_name for im in root.coco("test").images]
    loader = test_loader(root, cfg, int(cfg["batch_size"]), torch_device)
    folds = [fold for fold, _ in checkpoints]
    log(
        f"predicting {len(ids)} test images of {root.root} with run {run_dir.name}: folds {folds}, "
        f"TTA {', '.join(tta_names) or 'none'}, {torch_device}"
    )
    probs_path = run_dir / "test" / "probs.npy"
    meta = {"members": [run_dir.name], "folds": folds, "tta": tta_names, "data": str(root.root)}
    writer = write_probs(probs_path, ids, list(classes.names), **meta)
    masks = predict_batches(nets, loader, writer, views, cfg)
    full = root.classes()
    lut = submission_values(classes, full)
    csv = out_dir / f"{name}.csv"
    sidecar = {"run": run_dir.name, "folds": folds, "tta": tta_names, "date": now(), "probs": str(probs_path)}
    save_submission(csv, ids, (lut[m] for m in masks), full.num_classes, sidecar)
    log(f"test probabilities: {probs_path}")
    log(f"submission: {csv}")
    return {"csv": str(csv), "run": run_dir.name, "probs": str(probs_path), "tta": tta_names, "folds": len(folds)}
