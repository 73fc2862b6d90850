"""Ensembles: soft voting of trained runs' stored probabilities, or hard voting of submission CSVs.

Soft voting (`ensemble_runs`): weights are chosen on the members' out-of-fold probabilities (`auto`: the
candidate with the best out-of-fold ranking mIoU among every single member, equal weights and a simplex grid,
all scored in one streamed pass), then the members' test probabilities are averaged with them. The result is
`submissions/<name>.csv` (+ `.json` sidecar) and a run folder `runs/<name>/` that ranks on the leaderboard.

Hard voting (`vote_csvs`): the pixel-wise majority of existing CSVs, ties to the earliest CSV.
Probabilities are streamed in blocks of images, so memory stays one block whatever the dataset's size; the
blocks are weighed and scored on the GPU when there is one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from competition.classes import ClassTable
from competition.coco import ImageInfo
from competition.data import DataRoot, resolve_data_root
from competition.errors import UserError
from competition.fileio import read_json, write_json
from competition.inference import parse_tta, pick_device
from competition.masks import MaskStore
from competition.metric import MeanIoU, Scores
from competition.predict import (
    SUBMISSIONS,
    check_name,
    describe_views,
    now,
    predict_run,
    run_classes,
    save_submission,
    submission_values,
)
from competition.probs import read_probs
from competition.runs import find_run, new_run_id, read_run
from competition.submission import read_submission, resize_nearest
from competition.train import ranking_value

Log = Callable[[str], None]
BLOCK = 16  # images per streamed block
GRID_STEP = 0.1  # simplex grid of candidate weights, up to GRID_MEMBERS members
GRID_MEMBERS = 3
RANDOM_CANDIDATES = 64  # Dirichlet samples of candidate weights beyond GRID_MEMBERS members


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


def candidate_weights(m: int, seed: int = 0) -> np.ndarray:
    """Candidate weight vectors [K, m] summing to 1, without repeats: equal weights, then each single member
    (rows 1..m), then a simplex grid of step GRID_STEP (up to GRID_MEMBERS members) or Dirichlet samples."""
    rows = [np.full(m, 1 / m), *np.eye(m)]
    if m <= GRID_MEMBERS:
        steps = round(1 / GRID_STEP)
        rows += [np.array(c) / steps for c in itertools.product(range(steps + 1), repeat=m) if sum(c) == steps]
    else:
        rows += list(np.random.default_rng(seed).dirichlet(np.ones(m), RANDOM_CANDIDATES))
    _, first = np.unique(np.round(np.stack(rows), 6), axis=0, return_index=True)
    return np.stack(rows)[np.sort(first)]


def parse_weights(spec: str, m: int) -> np.ndarray | None:
    """`--weights`: None for auto, 1/m each for equal, or m non-negative numbers normalised to sum 1."""
    if spec == "auto":
        return None
    if spec == "equal":
        return np.full(m, 1 / m)
    try:
        weights = np.array([float(w) for w in spec.split(",")])
    except ValueError:
        raise UserError(f"--weights {spec!r}: expected auto, equal or {m} comma-separated numbers") from None
    if len(weights) != m or (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() == 0:
        raise UserError(f"--weights {spec!r}: expected {m} non-negative numbers, not all zero (one per member)")
    return weights / weights.sum()


def blend(probs: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """Weighted sum over the first (member) axis of probabilities [M, ...] -> [...]."""
    return torch.tensordot(torch.from_numpy(weights).float().to(probs.device), probs, dims=1)


def score_weights(
    oofs: Sequence[OofProbs],
    images: Sequence[ImageInfo],
    masks: MaskStore,
    candidates: np.ndarray,
    classes: ClassTable,
    device: torch.device,
) -> list[Scores]:
    """Out-of-fold scores of every candidate weight vector, in one streamed pass over blocks of images."""
    metrics = [MeanIoU(classes.num_classes, classes.ignore_index, device) for _ in candidates]
    for part in blocks(len(images)):
        chunk = images[part]
        names = [im.file_name for im in chunk]
        probs = torch.stack([oof.block(names) for oof in oofs]).to(device)
        target = np.stack([resize_nearest(masks[im.id]) for im in chunk]).astype(np.int64)
        target = torch.from_numpy(target).to(device)
        for weights, metric in zip(candidates, metrics, strict=True):
            metric.update(blend(probs, weights).argmax(-1), target)
    return [metric.compute() for metric in metrics]


@dataclass
class Fit:
    """The chosen weights and the out-of-fold scores of the ensemble and of each member alone."""

    weights: np.ndarray
    miou: float
    member_miou: list[float]
    scores: Scores


def fit_weights(
    members: Sequence[Member], root: DataRoot, classes: ClassTable, spec: str, device: torch.device, log: Log
) -> Fit:
    """Score the candidate weights (or the given ones) and every member out of fold; keep the best."""
    cfg, m = members[0].cfg, len(members)
    oofs = [read_oof(member) for member in members]
    check_classes(
        [(members[0].dir, list(classes.names)), *((mb.dir, o.classes) for mb, o in zip(members, oofs, strict=True))]
    )
    images = oof_images(members, oofs, root)
    given = parse_weights(spec, m)
    candidates = candidate_weights(m) if given is None else np.vstack([given, np.eye(m)])
    log(f"scoring {len(candidates)} weightings of {m} members on {len(images)} out-of-fold images")
    masks = root.masks("train_all", classes, cfg["overlap"], log=log)
    scores = score_weights(oofs, images, masks, candidates, classes, device)
    values = [ranking_value(s, cfg["metric"]) for s in scores]
    best = int(np.nanargmax(values)) if given is None else 0  # ties: the earliest, equal weights first
    return Fit(candidates[best], values[best], values[1 : m + 1], scores[best])


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


def blended_masks(
    arrays: Sequence[np.ndarray], weights: np.ndarray, lut: np.ndarray, device: torch.device
) -> Iterator[np.ndarray]:
    """Argmax masks (competition values) of the weighted average of test probabilities, block by block."""
    for part in blocks(len(arrays[0])):
        probs = torch.stack([classes_last(a[part]) for a in arrays]).to(device)
        yield from lut[blend(probs, weights).argmax(-1).cpu().numpy()]


def ensemble_dir(runs_dir: Path, name: str) -> Path:
    """runs/<name>: new, or an earlier ensemble of that name (replaced); UserError if a trained run has it."""
    run_dir = Path(runs_dir) / check_name(name)
    if (run_dir / "run.json").exists() and read_run(run_dir).get("kind") != "ensemble":
        raise UserError(f"{run_dir}: a trained run has this name; choose another --name")
    return run_dir


def write_ensemble_run(run_dir: Path, run: dict[str, Any], results: dict[str, Any]) -> None:
    """run.json and results.json of an ensemble, so that it ranks on the leaderboard."""
    info = {"id": run_dir.name, "model": "ensemble", "kind": "ensemble", "status": "complete", **run}
    write_json(run_dir / "run.json", info)
    write_json(run_dir / "results.json", results)


def format_table(ids: Sequence[str], fit: Fit, metric: str) -> str:
    """Each member's weight and out-of-fold mIoU, and the ensemble's."""
    width = max(8, *(len(i) for i in ids))
    lines = [f"{'member':<{width}} {'weight':>6} {f'OOF mIoU ({metric})':>17}"]
    for i, w, s in zip(ids, fit.weights, fit.member_miou, strict=True):
        lines.append(f"{i:<{width}} {w:>6.3f} {s:>17.4f}")
    lines.append(f"{'ensemble':<{width}} {'':>6} {fit.miou:>17.4f}")
    return "\n".join(lines)


def ensemble_runs(
    refs: Sequence[str],
    runs_dir: Path,
    name: str | None = None,
    weights: str = "auto",
    data: str | None = None,
    tta: str | None = None,
    settings: dict[str, Any] | None = None,
    out_dir: Path = SUBMISSIONS,
    log: Log = print,
) -> dict[str, Any]:
    """Soft-vote ensemble of trained runs: weights fitted out of fold, test probabilities averaged, a CSV.

    `settings`: prediction settings for members whose test probabilities must be made (see predict_run).
    """
    settings = settings or {}
    device = settings.get("device", "auto")
    if len(refs) < 2:
        raise UserError("ensemble: give at least two runs (or --from-csv with CSV files)")
    run_dir = ensemble_dir(runs_dir, name or new_run_id("ensemble"))
    members = [load_member(runs_dir, ref) for ref in refs]
    ids = [m.id for m in members]
    cfg = members[0].cfg
    root = DataRoot(Path(data or cfg["data"]))
    classes = run_classes(members[0].dir, cfg, root)
    fit = fit_weights(members, root, classes, weights, pick_device(device), log)
    log(format_table(ids, fit, cfg["metric"]))
    arrays = load_test_probs(members, root, classes, tta, settings, log)
    full = root.classes()
    csv = out_dir / f"{run_dir.name}.csv"
    date = now()
    result = {
        "csv": str(csv),
        "members": ids,
        "weights": fit.weights.tolist(),
        "oof_miou": fit.miou,
        "member_oof_miou": fit.member_miou,
        "metric": cfg["metric"],
    }
    masks = blended_masks(arrays, fit.weights, submission_values(classes, full), pick_device(device))
    save_submission(
        csv, [im.file_name for im in root.coco("test").images], masks, full.num_classes, {**result, "date": date}
    )
    scores = {k: v for k, v in fit.scores.to_dict().items() if k != "n_images"}
    write_ensemble_run(
        run_dir,
        {"members": ids, "weights": result["weights"], "classes": list(classes.names), "finished": date},
        {"miou": fit.miou, "miou_std": 0.0, "folds": [], **scores, **result},
    )
    log(f"submission: {csv}")
    log(f"ensemble run (on the leaderboard): {run_dir}")
    return {**result, "dir": str(run_dir)}


def majority(votes: np.ndarray) -> np.ndarray:
    """Pixel-wise majority of label maps [K, ...]; a tie goes to the earliest map holding a tied value."""
    support = (votes[:, None] == votes[None]).sum(1)  # [K, ...]: how many maps agree with map k
    first = (support == support.max(0)).argmax(0)
    return np.take_along_axis(votes, first[None], 0)[0]


def vote_csvs(
    csvs: Sequence[Path],
    data: str | None = None,
    name: str | None = None,
    out_dir: Path = SUBMISSIONS,
    log: Log = print,
) -> dict[str, Any]:
    """Hard-vote ensemble of submission CSVs (each validated against test.json) -> a new CSV."""
    if len(csvs) < 2:
        raise UserError("ensemble --from-csv: give at least two CSV files")
    name = check_name(name or new_run_id("ensemble"))
    root = DataRoot(resolve_data_root(data, log), check_images=False)
    ids = [im.file_name for im in root.coco("test").images]
    num_classes = root.classes().num_classes
    votes = np.stack([read_submission(path, ids, num_classes) for path in csvs])
    log(f"voting {len(csvs)} CSVs pixel by pixel over {len(ids)} test images")
    csv = out_dir / f"{name}.csv"
    result = {
        "csv": str(csv),
        "members": [str(p) for p in csvs],
        "weights": [1 / len(csvs)] * len(csvs),
        "oof_miou": None,
        "member_oof_miou": [],
    }
    masks = (mask for part in blocks(len(ids)) for mask in majority(votes[:, part]))
    save_submission(csv, ids, masks, num_classes, {**result, "method": "majority", "date": now()})
    log(f"submission: {csv}")
    return result
