"""`pseudo-label RUN`: a run's stored test probabilities turned into a pseudo-labelled set (data.pseudo_set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from competition.core.errors import UsageError, UserError
from competition.core.fileio import building_folder
from competition.core.log import Log
from competition.core.runs import now, read_config
from competition.data import DataRoot, pseudo_dir
from competition.predict.probs import StoredProbs, read_probs
from competition.submit import check_name

BLOCK = 32  # images per block: memory stays one block whatever the test set's size


def pseudo_label(run_dir: Path, runs_dir: Path, threshold: float, name: str | None, log: Log) -> dict[str, Any]:
    """Write runs/pseudo/<name>/ from `run_dir`'s test probabilities; pixels below `threshold` are ignored."""
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: expected a probability in 0..1")
    probs_path = run_dir / "test" / "probs.npy"
    if not probs_path.exists():
        raise UserError(f"{run_dir}: no test probabilities; run ./run.sh predict {run_dir.name} first")
    probs = read_probs(probs_path)
    manifest = probs.manifest
    cfg = read_config(run_dir)
    root = DataRoot(Path(manifest.get("data") or cfg["data"]), check_images=False)
    test = root.coco("test")
    if manifest["images"] != [im.file_name for im in test.images]:
        raise UserError(f"{probs_path}: its images are not those of {test.path} in order; re-run predict")
    name = check_name(name or f"{run_dir.name}-t{threshold:g}")
    out = pseudo_dir(runs_dir, name)
    if out.exists():
        raise UserError(f"{out}: a pseudo-labelled set of that name exists; choose another --name")
    with building_folder(out, published=None) as tmp:
        kept = write_labels(probs, tmp / "labels.npy", threshold, int(cfg["ignore_index"]))
        meta = {
            "run": run_dir.name,
            "threshold": threshold,
            "classes": manifest["classes"],
            "data": str(root.root),
            "source": str(test.path),
            "images": [[im.id, im.file_name, im.height, im.width] for im in test.images],
            "kept": kept,
            "date": now(),
        }
        (tmp / "pseudo.json").write_text(json.dumps(meta, indent=2))
    log(f"pseudo-labels of {len(test.images)} test images from {run_dir.name}: {kept:.1%} of pixels kept "
        f"(top probability >= {threshold:g}) -> {out}")  # fmt: skip
    log(f"add them to every training fold: --set pseudo={name}")
    return {"name": name, "dir": str(out), "images": len(test.images), "kept": kept, "set": f"pseudo={name}"}


def write_labels(probs: StoredProbs, path: Path, threshold: float, ignore_index: int) -> float:
    """Argmax labels (uint8) of stored probabilities [n, C, 256, 256], ignore_index where the top probability is
    below `threshold`, block by block into a .npy; returns the share of pixels kept."""
    n, _, h, w = probs.array.shape
    labels = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, h, w))
    kept = 0
    for start in range(0, n, BLOCK):
        block = probs.probabilities(slice(start, start + BLOCK))
        top, label = block.max(1), block.argmax(1).astype(np.uint8)
        confident = top >= threshold
        label[~confident] = ignore_index
        labels[start : start + BLOCK] = label
        kept += int(confident.sum())
    labels.flush()
    del labels
    return kept / max(1, n * h * w)
