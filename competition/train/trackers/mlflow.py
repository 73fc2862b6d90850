"""MLflow tracking (`--set tracker=mlflow`, or with others: `tensorboard,mlflow`): one MLflow run per training run.

The store is MLFLOW_TRACKING_URI when set (a server, another database), else a local SQLite store in the runs
folder, `<runs>/mlflow.db`, with artifacts under `<runs>/mlartifacts/` (see it with
`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`). SQLite, not the `./mlruns` file store: MLflow 3.7+
refuses the file store unless MLFLOW_ALLOW_FILE_STORE=true (then MLFLOW_TRACKING_URI=file:... works too).
The experiment is the study of a search trial, else the model. The MLflow run is named after the run folder and
carries:
- params: the run's resolved settings (logged once, when the MLflow run is created);
- tags: run folder, model, study and trial number when the run is a trial;
- metrics: `fold_<i>/<tag>` every epoch (the TensorBoard tags; step = epoch, so a resumed fold continues its
  curves), and `cv/fold_miou` (step = fold), `cv/miou`, `cv/miou_std` at the end;
- artifacts: results.json, metrics.csv, per_class_iou.csv, config.json, the run's PNGs, each fold's overlays.

Its id is kept in run.json (`mlflow_run`), so a resumed run logs into the same MLflow run. A pruned or
interrupted run's MLflow run ends KILLED, a failed one FAILED. MLflow is an optional package (mlflow-skinny,
pinned in requirements.lock): without it, tracker=mlflow is a one-line error before any work.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from competition.core.errors import UserError, first_line
from competition.core.locks import exclusive_lock
from competition.core.log import Log
from competition.core.redact import redact, redact_url
from competition.core.runs import update_run
from competition.train.trackers.base import BestEffort, Tracker, TrackerError
from competition.train.trackers.tensorboard import scalars

# the kept run files logged as artifacts at the end of a run
RUN_ARTIFACTS = ("results.json", "metrics.csv", "per_class_iou.csv", "config.json", "learning_curves.png",
                 "per_class_iou.png")  # fmt: skip


def _client_class(setting: str = "tracker=mlflow"):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError(
            f"setting {setting}: the optional package mlflow is not installed; `./run.sh setup` installs it, "
            "or `pip install -c requirements.lock mlflow-skinny` (or leave tracker=tensorboard)"
        ) from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its INFO lines about creating tables
    return MlflowClient


def tracking_uri(runs_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else the SQLite store <runs>/mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def shown_uri(uri: str) -> str:
    """The URI as logs may show it: every credential replaced by *** (core.redact)."""
    return redact_url(uri)


class MlflowRun(Tracker):
    """The MLflow run of one training run; every call is a few small writes to the store.

    A store that cannot be opened stops the run before training (one line). A write that fails later (a server
    gone away) is one warning line, and the run goes on without MLflow: its folder keeps everything."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, info: dict[str, Any], log: Log):
        client_class = _client_class()
        self.run_dir = Path(run_dir)
        self.uri = tracking_uri(self.run_dir.parent)
        self.log = log
        self._write = BestEffort(log, "mlflow", shown_uri(self.uri), self._say)
        try:  # one process at a time opens the store: the first creates its tables, and creates experiments
            with exclusive_lock(self.run_dir.parent / ".mlflow.lock"):
                self.client = client_class(tracking_uri=self.uri)
                self._open(cfg, info, log)
        except Exception as e:
            raise TrackerError(
                f"tracker=mlflow: cannot open the MLflow store {shown_uri(self.uri)}: {self._say(e)}"
            ) from None

    def _say(self, e: BaseException) -> str:
        """An error's first line, with the store's password (if any) masked."""
        return redact(first_line(e, 10_000), self.uri)[:200]

    def _open(self, cfg: dict[str, Any], info: dict[str, Any], log: Log) -> None:
        previous = info.get("mlflow_run")
        if previous and previous.get("uri") == shown_uri(self.uri):
            self.run_id = previous["id"]
            self.client.update_run(self.run_id, status="RUNNING")
            log(f"mlflow: resuming run {self.run_id} in {shown_uri(self.uri)}")
            return
        trial = info.get("trial") or {}
        experiment = self._experiment(str(trial.get("study") or cfg["model"]))
        tags = {"run_folder": self.run_dir.name, "model": str(cfg["model"])}
        if trial:
            tags |= {"study": str(trial.get("study")), "trial": str(trial.get("number"))}
        self.run_id = self.client.create_run(experiment, run_name=self.run_dir.name, tags=tags).info.run_id
        from mlflow.entities import Param

        params = [Param(key, str(value)[:6000]) for key, value in sorted(cfg.items())]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        update_run(self.run_dir, mlflow_run={"id": self.run_id, "uri": shown_uri(self.uri), "experiment": experiment})
        log(f"mlflow: run {self.run_id} in {shown_uri(self.uri)}")

    def _experiment(self, name: str) -> str:
        """The experiment's id, created when missing (its artifacts under <runs>/mlartifacts for our store)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        ours = "MLFLOW_TRACKING_URI" not in os.environ  # a server or the user's store keeps its own artifact root
        where = (self.run_dir.parent.resolve() / "mlartifacts").as_uri() if ours else None
        return self.client.create_experiment(name, artifact_location=where)

    @classmethod
    def require(cls, setting: str) -> None:
        _client_class(setting)

    def epoch(self, fold: int, row: dict[str, Any]) -> None:
        self.metrics({f"fold_{fold}/{tag}": v for tag, v in scalars(row).items()}, int(row["epoch"]))

    def images(self, fold: int, paths: list[Path], step: int) -> None:
        self.artifacts(sorted(paths), f"fold_{fold}")

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, int(step)) for key, value in values.items()]
        if batch:
            self._write(self.client.log_batch, self.run_id, metrics=batch)

    def artifacts(self, paths: list[Path], folder: str | None = None) -> None:
        for path in paths:
            if Path(path).is_file():
                self._write(self.client.log_artifact, self.run_id, str(path), artifact_path=folder)

    def finish(self, results: list[dict[str, Any]], mean: float, std: float) -> None:
        """The CV scores, the run's files as artifacts, status FINISHED."""
        for r in results:
            self.metrics({"cv/fold_miou": r["miou"]}, int(r["fold"]))
        self.metrics({"cv/miou": mean, "cv/miou_std": std}, 0)
        self.artifacts([self.run_dir / name for name in RUN_ARTIFACTS])
        self._write(self.client.set_terminated, self.run_id, status="FINISHED")

    def end(self, status: str) -> None:
        """A run that stopped before its end: KILLED (pruned, interrupted) or FAILED."""
        self._write(self.client.set_terminated, self.run_id, status=status)
