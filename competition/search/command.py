"""`search MODEL`: one call from the command line to a finished study, its table, the leaderboard and a
submission of its best trial."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import models
from competition.core.config import MACHINERY, describe, validate
from competition.core.errors import UsageError
from competition.core.log import Log
from competition.core.names import plain_name
from competition.data import is_sample
from competition.predict import predict_run
from competition.search.space import load_space
from competition.search.storage import storage_url
from competition.search.study import StudySpec, prepare_study
from competition.search.summary import summarize_study
from competition.search.workers import SearchJob, launch
from competition.train import check_gpus, format_table, leaderboard_rows, new_run_settings

QUICK_TRIALS = 4  # trials of a search on the sample data (the README's main job)
TRIALS = 20


@dataclass(frozen=True, kw_only=True)
class SearchRequest:
    """What the user asked for (plain values; `given`: the settings they gave, already checked)."""

    model: str
    data: str | None
    given: dict[str, Any]
    runs_dir: Path
    trials: int | None = None
    space: Path | None = None
    storage: str | None = None
    study: str | None = None
    pruner: str | None = None  # None: the study's, else the default (search/study.py DEFAULT_STRATEGY)
    sampler: str | None = None
    sampler_seed: int | None = None  # the command line's --sampler-seed, else its --seed
    timeout: float | None = None
    epoch_budget: int | None = None
    keep_oof: int = 5
    workers: int = 1
    force: bool = False
    predict: bool = True
    keep_checkpoints: int | None = None


def run_search(request: SearchRequest, log: Log) -> dict[str, Any]:
    """Create or continue the study, run the trials, summarise; returns the `search --json` result."""
    if request.keep_oof < 0:
        raise UsageError(f"--keep-oof {request.keep_oof}: expected 0 or more trials")
    if request.keep_checkpoints is not None and request.keep_checkpoints < 1:
        raise UsageError(f"--keep-checkpoints {request.keep_checkpoints}: expected 1 or more trials")
    if request.trials is not None and request.trials < 0:
        raise UsageError(f"--trials {request.trials}: expected 0 or more")
    if request.workers < 1:
        raise UsageError(f"--workers {request.workers}: expected 1 or more")
    space_file = load_space(request.space) if request.space else None
    cfg = new_run_settings(request.model, request.data, request.given, log)
    check_gpus(cfg, request.workers)  # --gpus-per-trial G x --workers W devices: refused before anything starts
    quick = is_sample(Path(cfg["data"]))
    spec = models.get_spec(cfg["model"])
    space = space_file if space_file is not None else dict(spec.quick_space if quick else spec.search_space)
    trials = request.trials if request.trials is not None else (QUICK_TRIALS if quick else TRIALS)
    url = storage_url(request.storage, request.runs_dir)
    name = plain_name(request.study or cfg["model"], "--study")  # it names the study's folder and its trials'
    fixed = {k: v for k, v in request.given.items() if k not in MACHINERY}
    if fixed:
        log(f"fixed by you: {describe(fixed)}")
    spec = StudySpec(
        url=url, name=name, pruner=request.pruner, sampler=request.sampler, sampler_seed=request.sampler_seed
    )
    study, spec, fixed = prepare_study(spec, cfg, fixed, runs_dir=request.runs_dir, force=request.force, log=log)
    if set(fixed) - set(request.given):  # settings the study fixed earlier
        cfg = validate({**cfg, **fixed})
    space = {k: v for k, v in space.items() if k not in fixed}
    if not space:
        raise UsageError("nothing left to search: every setting of the search space is fixed; drop some settings")
    log(f"search space: {', '.join(space)}")
    job = SearchJob(
        study=spec, base=cfg, space=space, runs_dir=request.runs_dir, timeout=request.timeout,
        epoch_budget=request.epoch_budget, keep_oof=request.keep_oof, keep_checkpoints=request.keep_checkpoints,
    )  # fmt: skip
    study = launch(study, job, trials, request.workers, log)
    result = summarize_study(study, url, request.runs_dir / "studies" / name, log, runs_dir=request.runs_dir)
    result["fixed"] = fixed
    log("")
    log(format_table(leaderboard_rows(request.runs_dir, pruned=True)))
    if result["best"] and request.predict:
        result["submission"] = predict_best(request.runs_dir, name, result["best"]["run"], log)
    return result


def predict_best(runs_dir: Path, study: str, run: str, log: Log) -> str:
    """The submission of the study's best trial (all its folds): submissions/<study>-best.csv."""
    log("")
    log(f"predicting the test set with the best trial ({run}) ...")
    result = predict_run(runs_dir / run, name=f"{study}-best", log=log)
    log(f"ready to upload: {result['csv']}")
    return result["csv"]
