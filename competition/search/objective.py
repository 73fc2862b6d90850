"""The Optuna objective: one trial trains one configuration with k-fold CV and returns its CV mean; what it
reports while it trains feeds the study's pruner (search/reports.py). A pruned trial returns its honest partial
value and ends COMPLETE, marked `pruned` (search/trials.py), with run.json status `pruned` and a results.json
of the folds it finished.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from competition import train as training
from competition.core.config import short, validate
from competition.core.fileio import write_json
from competition.core.locks import OwnerLock
from competition.core.log import Log
from competition.core.runs import remove_heavy_files, run_name, update_run
from competition.search.orphans import retry_trial
from competition.search.pruners import make_pruning
from competition.search.reports import StopTrial, TrialReports, fold_count
from competition.search.space import default_params, suggest
from competition.search.trials import PRUNED
from competition.train import NonFiniteLoss, OutOfMemory


class Objective:
    """Train one configuration per trial; its value is the CV mean of the ranking metric."""

    def __init__(
        self,
        *,
        base: dict[str, Any],
        space: dict[str, Any],
        runs_dir: Path,
        study: str,
        pruner: str,
        owner: OwnerLock,
        log: Log,
    ):
        self.base, self.space, self.runs_dir, self.study, self.log = base, space, runs_dir, study, log
        self.pruner, self.owner = pruner, owner

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", self.owner.info())
        if trial.user_attrs.get("default"):  # trial 0: exactly the default configuration, in the space or not
            params = default_params(self.space, self.base)
            trial.set_user_attr("params", params)
        else:
            params = suggest(trial, self.space)
        cfg = validate({**self.base, **params}, f"study {self.study}")
        run_dir = self._run_dir(trial)
        trial.set_user_attr("run", run_dir.name)
        trial.set_user_attr("dir", str(run_dir.resolve()))
        update_run(run_dir, trial={"study": self.study, "number": trial.number})
        log = self._prefixed(trial.number)
        log(f"start: {', '.join(f'{k}={short(v)}' for k, v in params.items())}")
        reports = TrialReports(trial, make_pruning(self.pruner, cfg), cfg, prunable=not trial.user_attrs.get("default"))
        try:  # train_run is looked up now: tests stand in for it
            results = training.train_run(cfg, run_dir, log, on_epoch=reports.epoch, on_fold=reports.fold)
        except StopTrial as e:
            self._end(trial, run_dir, "pruned", e.reason)
            update_run(run_dir, kind="trial")
            trial.set_user_attr(PRUNED, {"after_fold": e.folds, "epochs": reports.epochs, "reason": e.reason})
            write_partial_results(run_dir, cfg, reports.fold_scores, e)
            remove_heavy_files(run_dir)
            return e.value
        except (torch.cuda.OutOfMemoryError, OutOfMemory) as e:
            reason = str(e) if isinstance(e, OutOfMemory) else f"CUDA out of memory: {str(e).splitlines()[0][:160]}"
            self._end(trial, run_dir, "failed", reason)
            remove_heavy_files(run_dir)
            raise OutOfMemory(reason) from None
        except NonFiniteLoss as e:
            self._end(trial, run_dir, "failed", str(e))
            remove_heavy_files(run_dir)
            raise
        except KeyboardInterrupt:  # Ctrl-C: Optuna fails the trial; it is queued to resume in the same folder
            self._end(trial, run_dir, "interrupted", "interrupted (Ctrl-C); re-run the search to resume it")
            retry_trial(trial.study, frozen(trial), limit=False)
            raise
        update_run(run_dir, kind="trial")
        return float(results["miou"])

    def _run_dir(self, trial: optuna.Trial) -> Path:
        """A retried trial continues in the failed trial's folder, so its finished folds are kept."""
        previous = trial.user_attrs.get("run")
        if previous and (self.runs_dir / run_name(previous, "the study's trial record")).is_dir():
            self._prefixed(trial.number)(f"retry of a failed trial: resuming {previous}")
            return self.runs_dir / previous
        return self.runs_dir / f"{self.study}-t{trial.number:03d}-{secrets.token_hex(2)}"

    def _end(self, trial: optuna.Trial, run_dir: Path, status: str, reason: str) -> None:
        trial.set_user_attr("prune_reason" if status == "pruned" else "fail_reason", reason)
        update_run(run_dir, status=status, reason=reason)
        self._prefixed(trial.number)(f"{status}: {reason}")

    def _prefixed(self, number: int) -> Log:
        return lambda msg: self.log(f"[trial {number}] {msg}")


def frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored record of a running trial (public API: the study's trials, by number)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def write_partial_results(run_dir: Path, cfg: dict[str, Any], fold_scores: dict[int, float], stop: StopTrial) -> None:
    """A pruned run's results.json: the folds it finished and its partial value, marked `pruned`."""
    scores = list(fold_scores.values())
    write_json(
        Path(run_dir) / "results.json",
        {
            "run": Path(run_dir).name,
            "model": cfg["model"],
            "metric": cfg["metric"],
            "miou": stop.value,
            "miou_std": float(np.std(scores)) if scores else 0.0,
            "pruned": {"after_fold": stop.folds, "of": fold_count(cfg), "reason": stop.reason},
            "dir": str(run_dir),
            "folds": [{"fold": f, "miou": v} for f, v in fold_scores.items()],
        },
    )
