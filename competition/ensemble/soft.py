"""Ensembles: soft voting of trained runs' stored probabilities, or hard voting of submission CSVs.

Soft voting (`ensemble_runs`): weights are chosen on the members' out-of-fold probabilities (`auto`: equal
weights, the best member or greedy selection, whichever wins on held-out halves by more than the noise; see
ensemble.member_weights), then the members' test probabilities are averaged with them. The result is
`submissions/<name>.csv` (+ `.json` sidecar) and a run folder `runs/<name>/` that ranks on the leaderboard.

Hard voting (`vote_csvs`): the pixel-wise majority of existing CSVs, ties to the earliest CSV.
Test probabilities are streamed in blocks of images, so memory stays one block whatever the test set's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from competition.core.errors import UserError
from competition.core.fileio import write_json
from competition.core.log import Log
from competition.core.runs import new_run_id, now, read_run
from competition.data import DataRoot
from competition.ensemble.member_weights import Fit, fit_weights
from competition.ensemble.members import load_member, load_test_probs
from competition.ensemble.postfit import choose_post
from competition.predict import blended_masks, grid_images, run_classes
from competition.submit import (
    SUBMISSIONS,
    check_name,
    save_submission,
    submission_values,
)


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


def weights_table(ids: Sequence[str], fit: Fit, metric: str) -> str:
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
    post: str | None = None,
) -> dict[str, Any]:
    """Soft-vote ensemble of trained runs: weights fitted out of fold, test probabilities averaged, a CSV.
    `post`: none, auto (post-processing fitted on the ensemble's out-of-fold probabilities) or a FILE.

    `settings`: prediction settings for members whose test probabilities must be made (see predict_run).
    """
    settings = settings or {}
    if len(refs) < 2:
        raise UserError("ensemble: give at least two runs (or --from-csv with CSV files)")
    run_dir = ensemble_dir(runs_dir, name or new_run_id("ensemble"))
    members = [load_member(runs_dir, ref) for ref in refs]
    ids = [m.id for m in members]
    cfg = members[0].cfg
    root = DataRoot(Path(data or cfg["data"]))
    classes = run_classes(members[0].dir, cfg, root)
    fit = fit_weights(members, root, classes, weights, log)
    log(weights_table(ids, fit, cfg["metric"]))
    run_dir.mkdir(parents=True, exist_ok=True)
    decision = choose_post(post, members, fit.weights, root, classes, run_dir, log)
    stored = load_test_probs(members, root, classes, tta, settings, log)
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
        "selection": fit.selection,
    }
    if decision is not None:
        result["post"] = {k: v for k, v in decision.to_dict().items() if k != "report"}
        result["post_oof_miou"] = decision.report.get("after")
    pixels = grid_images(root, "test") if decision is not None and decision.needs_images else None
    masks = blended_masks(stored, fit.weights, submission_values(classes, full), decision, pixels)
    save_submission(
        csv,
        [im.file_name for im in root.coco("test").images],
        masks,
        full.num_classes,
        {**result, "run": run_dir.name, "date": date},
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
