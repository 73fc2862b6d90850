"""TensorBoard event files in run folders: per fold every epoch's scalars (the same numbers as metrics.csv) and
the prediction overlays; per run the fold scores and the CV mean; and `tensorboard --inspect --logdir runs`
reads them. With tracker=mlflow: the same numbers, files and outcomes in MLflow."""

from __future__ import annotations

import subprocess
import sys
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
    flags |= {"encoder": "resnet18", "encoder_weights": None, "overlays": 2, "tracker": "mlflow"}
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

    def stop_in_fold_1(fold: int, epoch: int, mean: float) -> None:
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


def test_tracker_mlflow_without_the_package_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    from competition.cli import main
    from competition.data import write_sample_dataset

    root = write_sample_dataset(tmp_path / "data", n_train=8, n_test=2, size=40)
    for name in ("mlflow", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, name, None)  # `import mlflow.tracking` raises ImportError
    runs = tmp_path / "runs"
    code = main(["train", "unet", "--data", str(root), "--runs-dir", str(runs), "--set", "tracker=mlflow"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, err
    assert "tracker=mlflow" in errors[0] and "mlflow-skinny" in errors[0]
    assert not runs.exists() or not any(runs.iterdir())  # nothing started


def test_logged_store_addresses_never_show_a_password():
    from competition.train.trackers.mlflow import shown_uri

    shown = shown_uri("postgresql://team:s3cret-pw@db.example:5432/mlflow")
    assert "s3cret-pw" not in shown and shown == "postgresql://team:***@db.example:5432/mlflow"
    assert shown_uri("sqlite:////tmp/runs/mlflow.db") == "sqlite:////tmp/runs/mlflow.db"


def test_a_store_that_cannot_be_opened_fails_the_run_before_training_in_one_line(tiny_cfg, tmp_path, monkeypatch):
    from competition.train import train_run
    from competition.train.trackers.mlflow import TrackerError

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
