"""The trackers (train/trackers). TensorBoard event files in run folders: per fold every epoch's scalars (the same
numbers as metrics.csv) and the prediction overlays; per run the fold scores and the CV mean; and
`tensorboard --inspect --logdir runs` reads them. With tracker=mlflow: the same numbers, files and outcomes in
MLflow; with tracker=wandb in W&B (offline here: its run files read back); tracker=none writes none of them."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from competition.core.fileio import read_json
from tests.conftest import search_inputs


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_every_fold_has_its_epochs_and_overlays_and_the_run_its_cv(small_runs):
    run = small_runs / "runs" / "run-a"
    history = pd.read_csv(run / "metrics.csv")
    for fold in (0, 1):
        acc = events(run / f"fold_{fold}")
        rows = history[history["fold"] == fold]
        for column, tag in (("train_loss", "loss/train"), ("val_loss", "loss/val"), ("miou_image", "miou/image")):
            logged = [(e.step, e.value) for e in acc.Scalars(tag)]
            expected = list(zip(rows["epoch"], rows[column], strict=True))
            assert [s for s, _ in logged] == [s for s, _ in expected]
            assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
        images = acc.Tags()["images"]
        assert sorted(images) == ["predictions/overlay_0", "predictions/overlay_1"]  # overlays=2 in the fixture
        picture = acc.Images("predictions/overlay_0")[0]
        assert picture.width > 100 and picture.height > 50 and picture.encoded_image_string[:4] == b"\x89PNG"
    acc = events(run)
    results = read_json(run / "results.json")
    assert [e.value for e in acc.Scalars("cv/fold_miou")] == pytest.approx([f["miou"] for f in results["folds"]])
    assert acc.Scalars("cv/mean_miou")[0].value == pytest.approx(results["miou"])


def test_tensorboard_reads_the_runs_folder(small_runs):
    tensorboard = Path(sys.executable).parent / "tensorboard"
    done = subprocess.run(
        [str(tensorboard), "--inspect", "--logdir", str(small_runs / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout + done.stderr
    for name in ("run-a/fold_0", "run-b/fold_1", "loss/train", "predictions/overlay_0", "cv/mean_miou"):
        assert name in text, text[-3000:]


# --- MLflow (--set tracker=mlflow) ------------------------------------------------------------------------------


@pytest.fixture
def tiny_cfg(tmp_path):
    """Settings of a 2-fold, 2-epoch unet run on a tiny sample dataset, logged to MLflow."""
    import models
    from competition.core.config import resolve
    from competition.data import write_sample_dataset

    root = write_sample_dataset(tmp_path / "data", n_train=8, n_test=2, size=40)
    flags = {"folds": 2, "epochs": 2, "image_size": 32, "batch_size": 4, "num_workers": 0, "device": "cpu"}
    flags |= {"val_every": 1, "encoder": "resnet18", "encoder_weights": None, "overlays": 2, "tracker": "mlflow"}
    cfg = resolve(models.get_spec("unet").defaults, flags=flags)
    cfg.update(model="unet", data=str(root))
    return cfg


def mlflow_run_of(run_dir: Path):
    from mlflow.tracking import MlflowClient

    info = read_json(run_dir / "run.json")["mlflow_run"]
    assert info["uri"] == f"sqlite:///{run_dir.parent.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=info["uri"])
    return client, client.get_run(info["id"])


def test_mlflow_run_holds_the_settings_every_epoch_the_cv_and_the_files(tiny_cfg, tmp_path):
    from competition.train import train_run

    run_dir = tmp_path / "runs" / "r1"
    results = train_run(tiny_cfg, run_dir, lambda _: None)
    client, run = mlflow_run_of(run_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert client.get_experiment(run.info.experiment_id).name == "unet"
    assert run.data.params["lr"] == str(tiny_cfg["lr"]) and run.data.params["tracker"] == "mlflow"
    assert run.data.tags["run_folder"] == "r1" and run.data.tags["model"] == "unet"
    history = pd.read_csv(run_dir / "metrics.csv")
    for fold in (0, 1):
        rows = history[history["fold"] == fold]
        for column, tag in (("train_loss", "loss/train"), ("miou_image", "miou/image"), ("lr", "lr")):
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"fold_{fold}/{tag}"))
            assert [s for s, _ in logged] == rows["epoch"].tolist()
            assert [v for _, v in logged] == pytest.approx(rows[column].tolist(), rel=1e-6)
    folds = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "cv/fold_miou"))
    assert folds == [(f["fold"], pytest.approx(f["miou"])) for f in results["folds"]]
    assert run.data.metrics["cv/miou"] == pytest.approx(results["miou"])
    assert run.data.metrics["cv/miou_std"] == pytest.approx(results["miou_std"])
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "metrics.csv", "per_class_iou.csv", "config.json", "learning_curves.png"} <= files
    overlays = {a.path for a in client.list_artifacts(run.info.run_id, "fold_1")}
    assert overlays == {"fold_1/overlay_0.png", "fold_1/overlay_1.png"}
    stored = Path(client.download_artifacts(run.info.run_id, "results.json", str(tmp_path / "dl")))
    assert read_json(stored)["miou"] == pytest.approx(results["miou"])
    assert (tmp_path / "runs" / "mlartifacts").is_dir()  # artifacts stay inside the runs folder


def test_a_stopped_run_is_killed_in_mlflow_and_its_resume_logs_into_the_same_run(tiny_cfg, tmp_path):
    from competition.train import train_run

    class Stop(Exception):
        pass

    def stop_in_fold_1(fold: int, epoch: int, mean: float, row: dict) -> None:
        if fold == 1:
            raise Stop

    run_dir = tmp_path / "runs" / "r2"
    with pytest.raises(Stop):
        train_run(tiny_cfg, run_dir, lambda _: None, on_epoch=stop_in_fold_1)
    client, run = mlflow_run_of(run_dir)
    assert run.info.status == "KILLED"
    first = run.info.run_id
    train_run(tiny_cfg, run_dir, lambda _: None)  # resumes: fold 0 finished, fold 1 from its last epoch
    client, run = mlflow_run_of(run_dir)
    assert run.info.run_id == first and run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    steps = sorted(m.step for m in client.get_metric_history(first, "fold_1/miou/image"))
    assert steps == [1, 2]  # epoch 1 before the stop, epoch 2 after the resume: one curve


def test_a_failed_run_is_failed_in_mlflow(tiny_cfg, tmp_path, monkeypatch):
    from competition.train import train_run
    from competition.train.loop import NonFiniteLoss

    nan_loss = lambda self, logits, target: logits.sum() * np.nan  # noqa: E731
    monkeypatch.setattr("competition.train.losses.MixedLoss.forward", nan_loss)
    run_dir = tmp_path / "runs" / "r3"
    with pytest.raises(NonFiniteLoss):
        train_run(tiny_cfg, run_dir, lambda _: None)
    assert mlflow_run_of(run_dir)[1].info.status == "FAILED"


def test_search_trials_are_runs_of_the_study_experiment(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from competition.cli import main

    root, space = search_inputs(tmp_path, n_train=8, n_test=2, size=40)
    runs = tmp_path / "runs"
    code = main(["search", "unet", "--data", str(root), "--runs-dir", str(runs), "--space", str(space), "--trials",
                 "2", "--study", "tracked", "--pruner", "none", "--folds", "2", "--epochs", "1", "--image-size", "32",
                 "--batch-size", "4", "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=0",
                 "--set", "tracker=mlflow"])  # fmt: skip
    assert code == 0, capsys.readouterr().err[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{runs.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs_logged = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["trial"] for r in runs_logged) == ["0", "1"]
    assert {r.data.tags["study"] for r in runs_logged} == {"tracked"}
    assert {r.info.status for r in runs_logged} == {"FINISHED"}


@pytest.mark.parametrize(
    "tracker,modules,install",
    [("mlflow", ("mlflow", "mlflow.tracking"), "mlflow-skinny"), ("tensorboard,wandb", ("wandb",), "wandb")],
)
def test_a_tracker_without_its_package_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, tracker, modules,
                                                                   install):  # fmt: skip
    from competition.cli import main
    from competition.data import write_sample_dataset

    root = write_sample_dataset(tmp_path / "data", n_train=8, n_test=2, size=40)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import mlflow.tracking` raises ImportError
    runs = tmp_path / "runs"
    code = main(["train", "unet", "--data", str(root), "--runs-dir", str(runs), "--set", f"tracker={tracker}"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, err
    assert f"tracker={tracker}" in errors[0] and f"pip install -c requirements.lock {install}" in errors[0]
    assert not runs.exists() or not any(runs.iterdir())  # nothing started


def test_logged_store_addresses_never_show_a_password():
    from competition.train.trackers.mlflow import shown_uri

    shown = shown_uri("postgresql://team:s3cret-pw@db.example:5432/mlflow")
    assert "s3cret-pw" not in shown and shown == "postgresql://team:***@db.example:5432/mlflow"
    assert shown_uri("sqlite:////tmp/runs/mlflow.db") == "sqlite:////tmp/runs/mlflow.db"


def test_a_store_that_cannot_be_opened_fails_the_run_before_training_in_one_line(tiny_cfg, tmp_path, monkeypatch):
    from competition.train import train_run
    from competition.train.trackers import TrackerError

    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    run_dir = tmp_path / "runs" / "r4"
    with pytest.raises(TrackerError, match=r"^tracker=mlflow: cannot open the MLflow store sqlite:///") as caught:
        train_run(tiny_cfg, run_dir, lambda _: None)
    assert "\n" not in str(caught.value)
    info = read_json(run_dir / "run.json")
    assert info["status"] == "failed" and "cannot open the MLflow store" in info["reason"]
    assert not list(run_dir.glob("fold_*/metrics.csv"))  # no epoch was trained


def test_a_store_that_fails_mid_run_is_one_warning_and_the_run_finishes(tiny_cfg, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from competition.train import train_run

    def unreachable(*args, **kwargs):
        raise ConnectionError("server at db.example went away")

    monkeypatch.setattr(MlflowClient, "log_artifact", unreachable)  # the first overlay, at the end of fold 0
    lines: list[str] = []
    results = train_run(tiny_cfg, tmp_path / "runs" / "r5", lines.append)
    warnings = [line for line in lines if line.startswith("warning: mlflow")]
    assert len(warnings) == 1 and "server at db.example went away" in warnings[0], lines
    assert (tmp_path / "runs" / "r5" / "results.json").exists() and len(results["folds"]) == 2
    client, run = mlflow_run_of(tmp_path / "runs" / "r5")
    logged = client.get_metric_history(run.info.run_id, "fold_0/miou/image")
    assert len(logged) == 2 and not client.get_metric_history(run.info.run_id, "fold_1/miou/image")  # off after


def test_store_errors_are_shown_without_the_password():
    from competition.train.trackers.mlflow import MlflowRun

    run = MlflowRun.__new__(MlflowRun)  # the error wording alone; no store is opened
    run.uri = "postgresql://team:s3cret-pw@db.example:5432/mlflow"
    said = run._say(RuntimeError("connection to postgresql://team:s3cret-pw@db.example failed\nmore lines"))
    assert said == "connection to postgresql://team:***@db.example failed"


# --- Weights & Biases (--set tracker=wandb; offline: no account, no network) ------------------------------------


def test_building_a_model_imports_no_wandb_and_the_wandb_tracker_still_does(tmp_path):
    """timm imports W&B at import time where it is installed (0.6 s; two /tmp folders that a killed process leaves
    behind): the harness keeps it from timm (competition/core/imports.py), not from its tracker."""
    code = """import os, sys
import models
def in_tmp(): return sorted(n for n in os.listdir(os.environ["TMPDIR"]) if "wandb" in n)
models.create_model("unet", 3)
import timm.utils.summary
print("timm" in sys.modules, "wandb" in sys.modules, hasattr(timm.utils.summary, "wandb"), in_tmp())
import wandb
print(wandb.__name__, in_tmp())
"""
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    built, imported = done.stdout.splitlines()[-2:]
    assert built == "True False False []", done.stdout  # SMP and timm loaded, W&B not, none of its folders
    assert imported.startswith("wandb ['tmp") and "wandb-media" in imported, imported  # W&B itself still imports


def wandb_records(path: Path):
    """The records of one W&B run file (`run-<id>.wandb`: a LevelDB-style log of protobuf records, as `wandb sync`
    reads it): 32 KiB blocks of chunks, each with a 7-byte header (crc, length, type: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        room = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if room < 7 or (kind == 0 and length == 0):  # the padded end of a block
            position += room
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_runs(folder: Path, wait: float = 60.0) -> list[dict]:
    """Every offline W&B run under `folder`/wandb, oldest first: id, project, name, config, history rows,
    summary (its updates merged) and exit code. W&B's own service process writes the files: on a loaded machine
    it may still be writing after `finish` has returned (presumably: seen once, a run file without its run
    record), so this reads again until every run has its exit record, for at most `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            runs = _wandb_runs(folder)
        except Exception:  # a record being written: read again, unless time is up
            if time.monotonic() > deadline:
                raise
        else:
            if all(run["exit_code"] is not None for run in runs) or time.monotonic() > deadline:
                return runs
        time.sleep(0.5)


def _wandb_runs(folder: Path) -> list[dict]:
    runs = []
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.parent.name):
        run = {"dir": path.parent, "history": [], "summary": {}, "exit_code": None}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run |= {"id": record.run.run_id, "project": record.run.project, "name": record.run.display_name}
                run["config"] = {i.key: json.loads(i.value_json) for i in record.run.config.update}
            elif kind == "history":
                run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                       for i in record.history.item})  # fmt: skip
            elif kind == "summary":
                run["summary"] |= {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.summary.update}  # fmt: skip
            elif kind == "exit":
                run["exit_code"] = record.exit.exit_code
        runs.append(run)
    return runs


def logged(run: dict, fold: int, tag: str) -> list[tuple[int, float]]:
    """(fold_<i>/epoch, value) of every history row of a W&B run holding `fold_<i>/<tag>`."""
    key = f"fold_{fold}/{tag}"
    return [(row[f"fold_{fold}/epoch"], row[key]) for row in run["history"] if key in row]


def test_tensorboard_and_wandb_log_every_epoch_and_a_resume_continues_the_same_wandb_run(
    tiny_cfg, tmp_path, wandb_offline, monkeypatch
):
    from competition.train import train_run

    monkeypatch.delenv("WANDB_DIR")  # the default: <runs>/wandb
    cfg = {**tiny_cfg, "tracker": "tensorboard,wandb"}

    class Stop(Exception):
        pass

    def stop_in_fold_1(fold: int, epoch: int, mean: float, row: dict) -> None:
        if fold == 1:
            raise Stop

    runs, run_dir = tmp_path / "runs", tmp_path / "runs" / "r6"
    with pytest.raises(Stop):
        train_run(cfg, run_dir, lambda _: None, on_epoch=stop_in_fold_1)
    [first] = wandb_runs(runs)
    assert first["exit_code"] == 1 and first["summary"]["stopped"] == "KILLED"
    assert first["id"] == read_json(run_dir / "run.json")["wandb_run"]["id"]
    results = train_run(cfg, run_dir, lambda _: None)  # resumes: fold 0 finished, fold 1 from its last epoch
    first, second = wandb_runs(runs)
    assert second["id"] == first["id"] and second["exit_code"] == 0  # one W&B run, synced in order
    assert (second["project"], second["name"]) == ("unet", "r6")
    assert second["config"]["lr"] == cfg["lr"] and second["config"]["tracker"] == "tensorboard,wandb"
    history = pd.read_csv(run_dir / "metrics.csv")
    for fold in (0, 1):
        rows = history[history["fold"] == fold]
        for column, tag in (("train_loss", "loss/train"), ("miou_image", "miou/image"), ("lr", "lr")):
            values = logged(first, fold, tag) + logged(second, fold, tag)
            assert [e for e, _ in values] == rows["epoch"].tolist()  # fold 1: epoch 1 before the stop, 2 after
            assert [v for _, v in values] == pytest.approx(rows[column].tolist(), rel=1e-6)
        acc = events(run_dir / f"fold_{fold}")  # TensorBoard has the same epochs
        assert [e.step for e in acc.Scalars("loss/train")] == rows["epoch"].tolist()
    for run in (first, second):
        steps = [row["_step"] for row in run["history"]]
        assert steps == sorted(set(steps))  # W&B's own step only grows
    best = read_json(run_dir / "fold_1" / "result.json")["best_epoch"]
    [picture] = [row for row in second["history"] if "fold_1/predictions/overlay_1/_type" in row]
    assert picture["fold_1/predictions/overlay_1/_type"] == "image-file" and picture["fold_1/epoch"] == best
    assert (second["dir"] / "files" / picture["fold_1/predictions/overlay_1/path"]).is_file()
    assert second["summary"]["cv/miou"] == pytest.approx(results["miou"])
    assert second["summary"]["cv/miou_std"] == pytest.approx(results["miou_std"])
    folds = [(row["cv/fold"], row["cv/fold_miou"]) for row in second["history"] if "cv/fold_miou" in row]
    assert folds == [(f["fold"], pytest.approx(f["miou"])) for f in results["folds"]]
    assert events(run_dir).Scalars("cv/mean_miou")[0].value == pytest.approx(results["miou"])
    assert not (tmp_path / "wandb").exists() and not wandb_offline.exists()  # nothing in the cwd or elsewhere


def test_tracker_none_writes_no_tracker_files(tiny_cfg, tmp_path):
    from competition.train import train_run

    run_dir = tmp_path / "runs" / "r7"
    results = train_run({**tiny_cfg, "tracker": "none", "epochs": 1, "folds": 2}, run_dir, lambda _: None)
    assert len(results["folds"]) == 2 and (run_dir / "results.json").exists()
    assert not list(tmp_path.rglob("events.out.tfevents*"))
    assert not (tmp_path / "runs" / "mlflow.db").exists() and not (tmp_path / "runs" / "wandb").exists()
    assert {"mlflow_run", "wandb_run"}.isdisjoint(read_json(run_dir / "run.json"))


def test_an_unknown_tracker_is_one_usage_line_with_the_closest_name(tmp_path, capsys):
    from competition.cli import main
    from competition.data import write_sample_dataset

    root = write_sample_dataset(tmp_path / "data", n_train=8, n_test=2, size=40)
    runs = tmp_path / "runs"
    code = main(["train", "unet", "--data", str(root), "--runs-dir", str(runs), "--set", "tracker=tensorbord"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, errors
    assert "tracker='tensorbord'" in errors[0] and "did you mean 'tensorboard'?" in errors[0]
    assert "tensorboard, mlflow, wandb" in errors[0]
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(
    "value,reason",
    [("tensorboard,tensorboard", "listed twice"), ("none,wandb", "none with other"), ("tensorboard,", "empty")],
)
def test_a_tracker_list_names_each_backend_once_and_none_alone(value, reason):
    from competition.core.config import resolve
    from competition.core.errors import UsageError

    with pytest.raises(UsageError, match=reason):
        resolve(sets=[f"tracker={value}"])
    assert resolve(sets=["tracker=tensorboard, mlflow,wandb"])["tracker"] == "tensorboard,mlflow,wandb"
    assert resolve(sets=["tracker=[wandb, tensorboard]"])["tracker"] == "wandb,tensorboard"


def test_a_wandb_run_that_cannot_start_fails_the_run_before_training_in_one_line(
    tiny_cfg, tmp_path, wandb_offline, monkeypatch
):
    import wandb

    from competition.train import train_run
    from competition.train.trackers import TrackerError

    monkeypatch.setenv("WANDB_API_KEY", "k3y-s3cret")

    def refused(*args, **kwargs):
        raise RuntimeError("api key k3y-s3cret refused by the server\nmore lines")

    monkeypatch.setattr(wandb, "init", refused)
    run_dir = tmp_path / "runs" / "r8"
    with pytest.raises(TrackerError, match=r"^tracker=wandb: cannot start the W&B run in project unet") as caught:
        train_run({**tiny_cfg, "tracker": "tensorboard,wandb"}, run_dir, lambda _: None)
    assert "\n" not in str(caught.value) and "k3y-s3cret" not in str(caught.value) and "***" in str(caught.value)
    info = read_json(run_dir / "run.json")
    assert info["status"] == "failed" and "cannot start the W&B run" in info["reason"]
    assert not list(run_dir.glob("fold_*/metrics.csv"))  # no epoch was trained


def test_wandb_writes_that_fail_later_are_one_warning_and_the_project_is_wandb_project(
    tiny_cfg, tmp_path, wandb_offline, monkeypatch
):
    from competition.train.trackers import TRACKERS

    monkeypatch.setenv("WANDB_PROJECT", "mine")
    run_dir = tmp_path / "runs" / "r9"
    run_dir.mkdir(parents=True)
    lines: list[str] = []
    tracker = TRACKERS["wandb"](tiny_cfg, run_dir, {}, lines.append)
    assert read_json(run_dir / "run.json")["wandb_run"]["project"] == "mine"

    def unreachable(*args, **kwargs):
        raise ConnectionError("api.wandb.ai went away")

    monkeypatch.setattr(tracker.run, "log", unreachable)
    row = {"fold": 0, "epoch": 1, "train_loss": 1.0, "miou_image": 0.5}
    tracker.epoch(0, row)
    tracker.epoch(0, {**row, "epoch": 2})
    tracker.finish([{"fold": 0, "miou": 0.5}], 0.5, 0.0)
    warnings = [line for line in lines if line.startswith("warning: wandb")]
    assert len(warnings) == 1 and "api.wandb.ai went away" in warnings[0], lines
    [run] = wandb_runs(wandb_offline)
    assert run["project"] == "mine" and run["exit_code"] == 1  # ended, marked as not complete
