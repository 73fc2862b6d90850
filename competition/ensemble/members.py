"""Ensemble members: trained runs with their out-of-fold and test probabilities, checked to cover the same
images and classes (test probabilities are predicted first when missing).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from competition.core.errors import UserError
from competition.core.fileio import read_json
from competition.core.log import Log
from competition.core.runs import find_run, read_run
from competition.data import ClassTable, DataRoot, ImageInfo
from competition.predict import describe_views, parse_tta, predict_run, read_probs

BLOCK = 16  # images per streamed block


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
    """A member's out-of-fold probabilities: its folds' memory-mapped arrays and where each image's row is."""

    arrays: list[np.ndarray]
    where: dict[str, tuple[int, int]]  # file_name -> (fold array, row)
    classes: list[str]

    def block(self, names: Sequence[str]) -> torch.Tensor:
        """Probabilities [len(names), 256, 256, C] (float32, classes last) of these images."""
        return classes_last(np.stack([self.arrays[k][row] for k, row in (self.where[n] for n in names)]))


def classes_last(probs: np.ndarray) -> torch.Tensor:
    """Stored probabilities [B, C, H, W] as float32 [B, H, W, C]: the argmax over classes is then 3x faster."""
    return torch.from_numpy(np.ascontiguousarray(probs.transpose(0, 2, 3, 1), dtype=np.float32))


def blocks(n: int, size: int = BLOCK) -> Iterator[slice]:
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


def load_member(runs_dir: Path, ref: str) -> Member:
    """A trained run by reference; UserError for an ensemble (its members must be listed instead)."""
    run_dir = find_run(runs_dir, ref)
    info = read_run(run_dir)
    if info.get("kind") == "ensemble":
        raise UserError(f"{run_dir}: an ensemble, not a trained run; list its members instead: {info['members']}")
    return Member(run_dir, read_json(run_dir / "config.json"))


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
    loaded = [(path, *read_probs(path)) for path in paths]
    classes = check_classes([(path, manifest["classes"]) for path, _, manifest in loaded])
    where = {name: (k, row) for k, (_, _, manifest) in enumerate(loaded) for row, name in enumerate(manifest["images"])}
    return OofProbs([array for _, array, _ in loaded], where, classes)


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


def member_test_probs(
    member: Member, root: Path, tta: str | None, settings: dict[str, Any], log: Log
) -> tuple[np.ndarray, dict[str, Any]]:
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
) -> list[np.ndarray]:
    """Every member's test probabilities, checked to cover test.json's images in order with the same classes."""
    test = root.coco("test")
    ids = [im.file_name for im in test.images]
    arrays = []
    for member in members:
        array, manifest = member_test_probs(member, root.root, tta, settings, log)
        source = member.dir / "test" / "probs.npy"
        if manifest["images"] != ids:
            raise UserError(
                f"{source}: its {len(manifest['images'])} images are not those of {test.path} in order; "
                f"re-run ./run.sh predict {member.id} --data {root.root}"
            )
        check_classes([(members[0].dir, list(classes.names)), (source, manifest["classes"])])
        arrays.append(array)
    return arrays
