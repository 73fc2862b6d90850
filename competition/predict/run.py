"""Test-set prediction of a trained run: every fold's best checkpoint, with optional test-time augmentation.

Softmax probabilities are averaged over the TTA views and the folds (soft voting), stored as uint8 at
256 x 256 in `runs/<id>/test/probs.npy` (with its manifest) for ensembling, and the argmax of what is stored
becomes `submissions/<name>.csv` (with a `.json` sidecar). Both stream by batches of images: memory does not
grow with the number of test images. The CSV holds the competition's class values (every
category kept), whatever class policy (ignore, merge) the run trained with.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import models
from competition.core.checkpoint import load_checkpoint, load_weights
from competition.core.config import image_hw
from competition.core.errors import UserError
from competition.core.log import Log
from competition.core.progress import progress
from competition.core.runs import now, read_config, read_run
from competition.core.tta import View, check_square, parse_tta
from competition.data import ClassTable, DataRoot, SegmentationDataset, eval_transform
from competition.predict.blend import blended_masks
from competition.predict.crf import grid_images
from competition.predict.decide import Decision
from competition.predict.inference import compiled, describe_views, loader_workers, pick_device, predict_probs
from competition.predict.probs import ProbsWriter, read_probs, write_probs
from competition.submit import (
    SUBMISSIONS,
    check_name,
    save_submission,
    submission_values,
)

FOLD_DIR = re.compile(r"fold_(\d+)")


def fold_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(fold, best.pt) of every finished fold of the run, by fold; other folders beside them are not folds.

    UserError if no fold has a checkpoint, or if a finished fold (fold_i/result.json) lost its own: an ensemble
    of the others would be silently smaller than the run it claims to be."""
    run_dir = Path(run_dir)
    folds = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := FOLD_DIR.fullmatch(p.name)))
    info = read_run(run_dir) if (run_dir / "run.json").exists() else {}
    why = info.get("checkpoints_removed")
    found = [(fold, p / "best.pt") for fold, p in folds if (p / "best.pt").is_file()]
    lost = [fold for fold, p in folds if (p / "result.json").exists() and not (p / "best.pt").is_file()]
    if lost and found and not why:
        raise UserError(
            f"{run_dir}: fold {lost[0]} is finished but its checkpoint fold_{lost[0]}/best.pt is missing "
            f"({len(found)} of {len(found) + len(lost)} folds have one); to train that fold again, delete "
            f"fold_{lost[0]}/result.json and run ./run.sh train {info.get('model', 'MODEL')} --resume {run_dir.name}"
        )
    if not found:
        raise UserError(
            f"{run_dir}: no fold checkpoints (fold_*/best.pt): "
            + (f"deleted by --keep-checkpoints ({why})" if why else "a pruned trial or an unfinished run has none")
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
    model, _ = models.create_model(cfg["model"], num_classes, cfg | models.ARCHITECTURE_ONLY)
    load_weights(model, load_checkpoint(checkpoint, device), checkpoint)
    model = model.to(device).eval()
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


def test_loader(root: DataRoot, cfg: dict[str, Any], batch_size: int, device: torch.device) -> DataLoader:
    """The test images of test.json in order, prepared as the run's validation images were."""
    test = root.coco("test")
    dataset = SegmentationDataset(root.root, test.path, test.images, None, eval_transform(cfg), "predict")
    workers = loader_workers(cfg["num_workers"], device)
    return DataLoader(dataset, batch_size, num_workers=workers, pin_memory=device.type == "cuda")


def predict_batches(
    nets: list[torch.nn.Module], loader: DataLoader, writer: ProbsWriter, views: list[View], cfg: dict[str, Any]
) -> Path:
    """Write the fold- and view-averaged probabilities of every batch; return the published file."""
    device = next(nets[0].parameters()).device
    try:
        for images, _ in progress(loader, desc="predict", leave=False, unit="batch"):
            images = images.to(device)
            total = sum(predict_probs(net, images, views, cfg["amp"], cfg["channels_last"]) for net in nets)
            writer.write(total / len(nets))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def predict_run(
    run_dir: Path,
    data: str | None = None,
    tta: str | None = None,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    out_dir: Path = SUBMISSIONS,
    log: Log = print,
    decision: Decision | None = None,
) -> dict[str, Any]:
    """Test probabilities of every fold of a run and its submission CSV; returns where they went.
    `decision`: a post-processing (predict.decide) instead of the argmax.

    `settings`: the run's settings to override for prediction (config.PREDICTION_KEYS: batch size, device,
    workers, amp, channels_last); the device is `auto` unless given.
    """
    run_dir = Path(run_dir)
    settings = settings or {}
    cfg = read_config(run_dir) | settings
    checkpoints = fold_checkpoints(run_dir)
    status = read_run(run_dir).get("status")
    if status != "complete":
        log(f"warning: run {run_dir.name} is {status}; predicting with the {len(checkpoints)} checkpoints it has")
    root = DataRoot(Path(data or cfg["data"]))
    classes = run_classes(run_dir, cfg, root)
    views = parse_tta(tta)
    check_square(views, image_hw(cfg))
    tta_names = describe_views(views)
    name = check_name(name or run_dir.name + ("-tta" if tta_names else ""))
    start = time.time()
    torch_device = pick_device(settings.get("device", "auto"))
    nets = [load_fold_model(cfg, path, classes.num_classes, torch_device) for _, path in checkpoints]
    if cfg.get("compile"):
        example = torch.zeros(1, 3, *image_hw(cfg), device=torch_device)
        nets = [compiled(net, example, log) for net in nets]
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
    stored = read_probs(predict_batches(nets, loader, writer, views, cfg))
    full = root.classes()
    pixels = grid_images(root, "test") if decision is not None and decision.needs_images else None
    masks = blended_masks([stored], [1.0], submission_values(classes, full), decision, pixels)  # argmax unless decided
    csv = out_dir / f"{name}.csv"
    sidecar = {"run": run_dir.name, "folds": folds, "tta": tta_names, "date": now(), "probs": str(probs_path)}
    if decision is not None:
        sidecar["post"] = {k: v for k, v in decision.to_dict().items() if k != "report"}
    save_submission(csv, ids, masks, full.num_classes, sidecar)
    log(f"test probabilities: {probs_path}")
    log(f"{'images':>6} {'folds':>5} {'TTA views':>9} {'seconds':>7}  submission")
    log(f"{len(ids):>6} {len(folds):>5} {len(tta_names) or 1:>9} {time.time() - start:>7.1f}  {csv}")
    log(f"submission: {csv}")
    return {"csv": str(csv), "run": run_dir.name, "probs": str(probs_path), "tta": tta_names, "folds": len(folds)}
