"""Cross-validation folds, fixed once and reused (as nnU-Net's splits_final.json).

`kfold`: k folds of train_all stratified by class presence with iterative stratification for multi-label
data (Sechidis, Tsoumakas & Vlahavas, 2011): rarest labels are placed first, each image going to the fold
that most lacks its labels. Reproducible from the seed; written to `.cache/folds/` beside the mask cache and
read back on every later run, so every run and trial sees the same folds.
`official`: the organisers' train.json / val.json split, as a single fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.core.errors import UserError
from competition.core.fileio import read_json, write_json
from competition.data.coco import CocoFile
from competition.data.masks import cache_root
from competition.data.root import DataRoot


@dataclass(frozen=True)
class Folds:
    """Validation image ids per fold; training ids are every other image of the pool."""

    method: str
    val_ids: tuple[tuple[int, ...], ...]
    pool: tuple[int, ...]
    path: Path | None = None

    @property
    def k(self) -> int:
        return len(self.val_ids)

    def train_ids(self, fold: int) -> list[int]:
        val = set(self.val_ids[fold])
        return [i for i in self.pool if i not in val]


def presence_matrix(coco: CocoFile) -> np.ndarray:
    """images x categories booleans: which categories appear in each image."""
    col = {c["id"]: j for j, c in enumerate(coco.categories)}
    y = np.zeros((len(coco.images), len(col)), dtype=bool)
    for i, im in enumerate(coco.images):
        for ann in coco.annotations[im.id]:
            y[i, col[ann["category_id"]]] = True
    return y


def iterative_stratification(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per row of a boolean label matrix (Sechidis et al. 2011, equal fold sizes)."""
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    fold_of = np.full(n, -1)
    want_total = np.full(k, n / k)
    want_label = np.tile(labels.sum(0) / k, (k, 1)).astype(float)
    left = labels.copy()
    unassigned = np.ones(n, dtype=bool)
    while left.any():
        counts = left.sum(0)
        rarest = np.flatnonzero(counts == counts[counts > 0].min())
        label = rng.choice(rarest)
        for i in rng.permutation(np.flatnonzero(left[:, label])):
            fold = _pick(want_label[:, label], want_total, rng)
            fold_of[i] = fold
            want_label[fold] -= labels[i]
            want_total[fold] -= 1
            left[i] = False
            unassigned[i] = False
    for i in rng.permutation(np.flatnonzero(unassigned)):  # images without any label
        fold = _pick(want_total, want_total, rng)
        fold_of[i] = fold
        want_total[fold] -= 1
    return fold_of


def _pick(primary: np.ndarray, secondary: np.ndarray, rng: np.random.Generator) -> int:
    """The fold that most wants this image: highest primary demand, then total demand, then at random."""
    best = np.flatnonzero(primary == primary.max())
    if len(best) > 1:
        best = best[secondary[best] == secondary[best].max()]
    return int(rng.choice(best))


def kfold(coco: CocoFile, k: int, seed: int) -> Folds:
    """Stratified k folds of a COCO file's images, cached as JSON under .cache/folds/ (written once)."""
    if not 2 <= k <= len(coco.images):
        raise UserError(f"{coco.path}: cannot make {k} folds of {len(coco.images)} images (need 2 <= k <= n)")
    path = cache_root() / "folds" / f"{coco.path.stem}-{coco.sha256[:16]}-k{k}-seed{seed}.json"
    ids = coco.image_ids
    if path.exists():
        saved = _saved_folds(path, ids, k)
        if saved is not None:
            return Folds("kfold", saved, tuple(ids), path)
    fold_of = iterative_stratification(presence_matrix(coco), k, seed)
    folds = tuple(tuple(int(ids[i]) for i in np.flatnonzero(fold_of == f)) for f in range(k))
    meta = {"method": "multilabel iterative stratification", "k": k, "seed": seed, "source": str(coco.path)}
    write_json(path, {**meta, "sha256": coco.sha256, "folds": [list(f) for f in folds]})
    return Folds("kfold", folds, tuple(ids), path)


def _saved_folds(path: Path, ids: list[int], k: int) -> tuple[tuple[int, ...], ...] | None:
    """The folds of a cached fold file; None when it is damaged (it is then recomputed: the same folds, from
    the seed) or does not partition these images."""
    try:
        folds = tuple(tuple(int(i) for i in f) for f in read_json(path)["folds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    flat = sorted(i for f in folds for i in f)
    return folds if len(folds) == k and flat == sorted(ids) else None


def official(data: DataRoot) -> Folds:
    """The organisers' train/val split as one fold over train_all."""
    for split in ("train", "val"):
        if not data.has(split):
            raise UserError(f"{data.root / (split + '.json')}: missing; split=official needs train.json and val.json")
    pool = data.coco("train_all").image_ids
    known = set(pool)
    val = data.coco("val").image_ids
    for i in val + data.coco("train").image_ids:
        if i not in known:
            raise UserError(f"{data.root}: image id {i} of train.json/val.json is not in train_all.json")
    return Folds("official", (tuple(val),), tuple(pool), None)


def make_folds(data: DataRoot, split: str, k: int, seed: int) -> Folds:
    """The folds a run uses: `kfold` (k, seed) or `official`."""
    if split == "official":
        return official(data)
    return kfold(data.coco("train_all"), k, seed)
