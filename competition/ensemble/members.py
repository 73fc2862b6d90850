"""Ensemble members: trained runs with their out-of-fold and test probabilities, checked to cover the same
images and classes (test probabilities are predicted first when missing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from competition.core.errors import UserError
from competition.core.fileio import read_json
from competition.core.log import Log
from competition.core.runs import find_run, read_config, read_run
from competition.data import ClassTable, DataRoot, ImageInfo
from competition.predict import StoredProbs, describe_views, parse_tta, predict_run, read_probs


@dataclass
class Member:
    """One trained run of an ensemble."""

    dir: Path
    cfg: dict[str, Any]

    @property
    def id(self) -> str:
        return self.dir.name


@dataclass
class OofProbs:
    """A member's out-of-fold probabilities: its folds' stored files and where each image's row is."""

    folds: list[StoredProbs]
    where: dict[str, tuple[int, int]]  # file_name -> (fold file, row)
    classes: list[str]

    @property
    def unit(self) -> float:
        """Probability per unit of `block`: the folds' own (1/255 or 1), or 1 if their formats differ."""
        units = {fold.unit for fold in self.folds}
        return units.pop() if len(units) == 1 else 1.0

    @property
    def dtype(self) -> np.dtype:
        """The dtype of `block`."""
        same = len({fold.unit for fold in self.folds}) == 1
        return self.folds[0].array.dtype if same else np.dtype(np.float32)

    def block(self, names: Sequence[str]) -> np.ndarray:
        """Stored values [len(names), C, 256, 256] of these images (probabilities = values x unit)."""
        unit = self.unit
        rows = []
        for fold, row in (self.where[n] for n in names):
            stored = self.folds[fold]
            rows.append(stored.read(row) if stored.unit == unit else stored.probabilities(row))
        return np.stack(rows)


def load_member(runs_dir: Path, ref: str) -> Member:
    """A trained run by reference; UserError for an ensemble (its members must be listed instead)."""
    run_dir = find_run(runs_dir, ref)
    info = read_run(run_dir)
    if info.get("kind") == "ensemble":
        raise UserError(f"{run_dir}: an ensemble, not a trained run; list its members instead: {info['members']}")
    return Member(run_dir, read_config(run_dir))


def read_oof(member: Member) -> OofProbs:
    """Every fold's out-of-fold probabilities of a member; UserError if it has none."""
    paths = sorted(member.dir.glob("fold_*/oof.npy"))
    if not paths:
        removed = read_run(member.dir).get("oof_removed")
        why = (
            f"deleted by the search: {removed} (search --keep-oof K keeps more)"
            if removed
            else "runs trained with save_oof=false and pruned trials have none"
        )
        raise UserError(f"{member.dir}: no out-of-fold probabilities (fold_*/oof.npy); {why}")
    folds = [read_probs(path) for path in paths]
    classes = check_classes([(fold.path, fold.classes) for fold in folds])
    where = {name: (k, row) for k, fold in enumerate(folds) for row, name in enumerate(fold.images)}
    return OofProbs(folds, where, classes)


def check_classes(tables: Sequence[tuple[Path, list[str]]]) -> list[str]:
    """The one class list of every (source, classes) pair; UserError naming both lists if two differ."""
    first_source, first = tables[0]
    for source, classes in tables[1:]:
        if list(classes) != list(first):
            raise UserError(f"{source}: classes {list(classes)} differ from {first_source}: {list(first)}")
    return list(first)


def oof_images(members: Sequence[Member], oofs: Sequence[OofProbs], data: DataRoot) -> list[ImageInfo]:
    """The train_all images every member has out-of-fold probabilities for (all of them must cover the same)."""
    coco = data.coco("train_all")
    union = set().union(*(oof.where for oof in oofs))
    unknown = sorted(union - {im.file_name for im in coco.images})
    if unknown:
        raise UserError(f"{coco.path}: has no image {unknown[0]} of the members' out-of-fold probabilities")
    for member, oof in zip(members, oofs, strict=True):
        missing = [im.file_name for im in coco.images if im.file_name in union and im.file_name not in oof.where]
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise UserError(
                f"{member.dir}: no out-of-fold probabilities for {len(missing)} images ({shown}) that other "
                "members have; was it trained with --fold?"
            )
    return [im for im in coco.images if im.file_name in union]


def member_test_probs(member: Member, root: Path, tta: str | None, settings: dict[str, Any], log: Log) -> StoredProbs:
    """A member's stored test probabilities, predicting them first when missing (or made with another TTA)."""
    path = member.dir / "test" / "probs.npy"
    manifest = path.with_suffix(".json")
    stored = read_json(manifest).get("tta") if path.exists() and manifest.exists() else None
    wanted = stored if tta is None else describe_views(parse_tta(tta))
    if stored is None or stored != wanted:
        why = "no test probabilities" if stored is None else f"test probabilities with TTA {stored or 'none'}"
        log(f"{member.id}: {why}; running predict first (TTA {tta or 'none'})")
        predict_run(member.dir, str(root), tta, settings=settings, log=log)
    return read_probs(path)


def load_test_probs(
    members: Sequence[Member],
    root: DataRoot,
    classes: ClassTable,
    tta: str | None,
    settings: dict[str, Any],
    log: Log,
) -> list[StoredProbs]:
    """Every member's test probabilities, checked to cover test.json's images in order with the same classes."""
    test = root.coco("test")
    ids = [im.file_name for im in test.images]
    stored = []
    for member in members:
        probs = member_test_probs(member, root.root, tta, settings, log)
        if probs.images != ids:
            raise UserError(
                f"{probs.path}: its {len(probs.images)} images are not those of {test.path} in order; "
                f"re-run ./run.sh predict {member.id} --data {root.root}"
            )
        check_classes([(members[0].dir, list(classes.names)), (probs.path, probs.classes)])
        stored.append(probs)
    return stored
