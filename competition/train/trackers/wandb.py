"""Weights & Biases tracking (`--set tracker=wandb`, or with others: `tensorboard,wandb`): one W&B run per
training run.

The project is WANDB_PROJECT when set, else the study of a search trial (its trials grouped by study), else the
model; the W&B run is named after the run folder and carries:
- config: the run's resolved settings;
- metrics: `fold_<i>/<tag>` every epoch (the TensorBoard tags) against the x-axis `fold_<i>/epoch`
  (define_metric), so W&B's own step only ever grows, across folds and resumes; the kept checkpoint's overlays as
  images `fold_<i>/predictions/overlay_<n>`; `cv/fold_miou` against `cv/fold` at the end;
- summary: `cv/miou`, `cv/miou_std`, and `stopped` (KILLED or FAILED) for a run that ended early.

A complete run finishes with exit code 0; a pruned, interrupted or failed one with exit code 1 (W&B shows it
failed; `stopped` says which). Its id is kept in run.json (`wandb_run`), so a resumed run logs into the same W&B
run (`id=..., resume="allow"`). W&B's own variables are respected: WANDB_MODE (`offline`: no account, no
network; `wandb sync` uploads later), WANDB_DIR (else the runs folder: files under `<runs>/wandb/`),
WANDB_PROJECT, WANDB_ENTITY, WANDB_API_KEY (never shown). W&B is an optional package (wandb, pinned in
requirements.lock): without it, tracker=wandb is a one-line error before any work. A run that cannot start
fails before training in one line; a write failing later is one warning line, and the run goes on without W&B.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from competition.core.errors import UserError, first_line
from competition.core.log import Log
from competition.core.runs import update_run
from competition.train.trackers.base import BestEffort, Tracker, TrackerError
from competition.train.trackers.tensorboard import scalars


def _wandb(setting: str = "tracker=wandb"):
    try:
        import wandb
    except ImportError:
        raise UserError(
            f"setting {setting}: the optional package wandb is not installed; `./run.sh setup` installs it, "
            "or `pip install -c requirements.lock wandb` (or leave tracker=tensorboard)"
        ) from None
    return wandb


def say(e: BaseException) -> str:
    """An error's first line, any API key in it masked."""
    text = first_line(e)
    key = os.environ.get("WANDB_API_KEY")
    return text.replace(key, "***") if key else text


class WandbRun(Tracker):
    """The W&B run of one training run. It cannot start: TrackerError; a write fails later: one warning line."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, info: dict[str, Any], log: Log):
        wandb = _wandb()
        self.run_dir, self.log = Path(run_dir), log
        self._write = BestEffort(log, "wandb", "W&B", say)
        self.folds: set[int] = set()  # folds whose x-axis is defined
        trial = info.get("trial") or {}
        project = os.environ.get("WANDB_PROJECT") or str(trial.get("study") or cfg["model"])
        root = Path(os.environ.get("WANDB_DIR") or self.run_dir.parent)  # W&B writes into <root>/wandb/
        previous = info.get("wandb_run") or {}
        resumed = previous.get("id") if previous.get("project") == project else None
        settings: dict[str, Any] = {} if "WANDB_CONSOLE" in os.environ else {"console": "off"}  # not our log lines
        if not {"WANDB_QUIET", "WANDB_SILENT"} & set(os.environ):
            settings["quiet"] = True  # W&B's lines on where the run is, not its end-of-run tables
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=project, name=self.run_dir.name, config=dict(cfg), dir=str(root),
                id=resumed, resume="allow" if resumed else None, group=trial.get("study"),
                tags=[str(cfg["model"])] + ([f"trial-{trial.get('number')}"] if trial else []),
                reinit="create_new", settings=wandb.Settings(**settings), allow_val_change=True,
            )  # fmt: skip
        except Exception as e:
            raise TrackerError(f"tracker=wandb: cannot start the W&B run in project {project}: {say(e)}") from None
        mode = "offline" if self.run.offline else "online"
        update_run(self.run_dir, wandb_run={"id": self.run.id, "project": project, "mode": mode})
        log(f"wandb: {'resuming ' if resumed else ''}run {self.run.id} in project {project} ({mode}, "
            f"{root / 'wandb'})")  # fmt: skip

    @classmethod
    def require(cls, setting: str) -> None:
        _wandb(setting)

    def _axis(self, fold: int) -> str:
        """`fold_<i>/epoch`, the x-axis of the fold's metrics (defined once per run)."""
        axis = f"fold_{fold}/epoch"
        if fold not in self.folds:
            self.folds.add(fold)
            self._write(self.run.define_metric, axis)
            self._write(self.run.define_metric, f"fold_{fold}/*", step_metric=axis)
        return axis

    def epoch(self, fold: int, row: dict[str, Any]) -> None:
        values = {f"fold_{fold}/{tag}": v for tag, v in scalars(row).items()}
        self._write(self.run.log, {self._axis(fold): int(row["epoch"]), **values})

    def images(self, fold: int, paths: list[Path], step: int) -> None:
        if not paths:
            return
        wandb = _wandb()
        pictures = {f"fold_{fold}/predictions/{Path(p).stem}": wandb.Image(str(p)) for p in paths}
        self._write(self.run.log, {self._axis(fold): int(step), **pictures})

    def finish(self, results: list[dict[str, Any]], mean: float, std: float) -> None:
        self._write(self.run.define_metric, "cv/fold")
        self._write(self.run.define_metric, "cv/fold_miou", step_metric="cv/fold")
        for r in results:
            self._write(self.run.log, {"cv/fold": int(r["fold"]), "cv/fold_miou": float(r["miou"])})
        self._write(self.run.summary.update, {"cv/miou": float(mean), "cv/miou_std": float(std)})
        self._close(0)

    def end(self, status: str) -> None:
        self._write(self.run.summary.update, {"stopped": status})
        self._close(1)

    def _close(self, exit_code: int) -> None:
        if not self._write.broken:
            self._write(self.run.finish, exit_code=exit_code)
            return
        try:  # a run that failed mid-way is still ended, quietly
            self.run.finish(exit_code=1)
        except Exception:
            pass
