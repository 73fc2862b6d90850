"""When a fold validates (`val_every`), which checkpoint it keeps (`keep`), and the final pass that is the last
epoch's validation when that epoch is kept (the same weights are never validated twice)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import models
from competition.core.checkpoint import load_checkpoint, load_weights
from competition.core.config import resolve
from competition.core.errors import UserError
from competition.data import write_sample_dataset
from competition.predict import read_probs
from competition.train import fold as fold_module
from competition.train import train_run
from competition.train.evaluate import evaluate
from competition.train.fold import val_interval, validated
from competition.train.setup import build_model, loaders, prepare

TINY = {
    "image_size": 32,
    "folds": 2,
    "batch_size": 4,
    "num_workers": 0,
    "encoder": "resnet18",
    "tracker": "none",
    "val_every": 1,
}


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
    return write_sample_dataset(tmp_path_factory.mktemp("vs") / "sample", n_train=12, n_test=4, size=48)


def cfg_for(root, **overrides):
    cfg = resolve(models.get_spec("unet").defaults, flags={**TINY, **overrides})
    cfg.update(model="unet", data=str(root), overlays=1)
    return cfg


def counting_evaluate(monkeypatch) -> list[bool]:
    """Every validation pass of the fold loop, True where it wrote the out-of-fold probabilities."""
    calls, real = [], fold_module.evaluate

    def wrapper(model, loader, setup, oof_dir=None, **kw):
        calls.append(oof_dir is not None)
        return real(model, loader, setup, oof_dir=oof_dir, **kw)

    monkeypatch.setattr(fold_module, "evaluate", wrapper)
    return calls


def test_validated_epochs():
    assert [e for e in range(1, 8) if validated(e, 7, 1)] == [1, 2, 3, 4, 5, 6, 7]
    assert [e for e in range(1, 8) if validated(e, 7, 3)] == [3, 6, 7]  # the last always
    assert [e for e in range(1, 8) if validated(e, 7, 0)] == [7]


def test_auto_validation_interval_and_workers():
    from competition.predict import loader_workers

    assert val_interval("auto", 400, 100) == 1  # 5 folds: validation is cheap, every epoch
    assert val_interval("auto", 300, 300) == 5  # 2 folds: every 5th epoch (and the last)
    assert val_interval(3, 300, 300) == 3 and val_interval(0, 300, 300) == 0
    assert resolve(sets=["val_every=auto", "num_workers=auto"])["val_every"] == "auto"
    assert resolve(sets=["val_every=4"])["val_every"] == 4
    with pytest.raises(UserError, match="num_workers"):
        resolve(sets=["num_workers=many"])
    import torch

    assert loader_workers("auto", torch.device("cpu")) == 0 and loader_workers("auto", torch.device("cuda")) == 2
    assert loader_workers(3, torch.device("cpu")) == 3


def test_val_every_validates_those_epochs_and_keeps_the_best_of_them(sample_root, tmp_path, monkeypatch):
    calls = counting_evaluate(monkeypatch)
    results = train_run(cfg_for(sample_root, epochs=5, val_every=2, fold=0), tmp_path / "run", log=lambda *a: None)
    history = pd.read_csv(tmp_path / "run" / "fold_0" / "metrics.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4, 5]  # every epoch trains and has its row
    scored = history.dropna(subset=["miou_image"])
    assert list(scored["epoch"]) == [2, 4, 5]
    assert history.loc[~history["epoch"].isin([2, 4, 5]), ["val_loss", "miou_dataset"]].isna().all().all()
    best_epoch = results["folds"][0]["best_epoch"]
    assert best_epoch in (2, 4, 5)
    assert results["folds"][0]["miou"] == pytest.approx(scored["miou_image"].max())
    assert len(calls) in (3, 4) and calls[-1]  # 3 passes when epoch 5 is kept, else one more for the kept one
    assert len(calls) == (3 if best_epoch == 5 else 4)


def test_the_kept_last_epoch_is_validated_once_and_its_pass_is_the_final_one(sample_root, tmp_path, monkeypatch):
    calls = counting_evaluate(monkeypatch)
    cfg = cfg_for(sample_root, epochs=3, keep="last", fold=0)
    results = train_run(cfg, tmp_path / "run", log=lambda *a: None)
    fold = results["folds"][0]
    assert fold["best_epoch"] == 3
    assert calls == [False, False, True]  # epochs 1-2, then epoch 3 writing the out-of-fold probabilities
    history = pd.read_csv(tmp_path / "run" / "fold_0" / "metrics.csv")
    assert fold["miou"] == pytest.approx(history["miou_image"].iloc[-1])
    # the final pass equals validating the kept checkpoint afresh: scores and out-of-fold probabilities
    setup = prepare(cfg, tmp_path, lambda *a: None)
    model, _ = build_model(setup)
    best = load_checkpoint(tmp_path / "run" / "fold_0" / "best.pt", setup.device)
    load_weights(model, best, tmp_path / "run" / "fold_0" / "best.pt")
    _, val_loader, val_set = loaders(setup, 0)
    again, _ = evaluate(model, val_loader, setup, oof_dir=tmp_path / "again", val_set=val_set)
    assert again.miou_image == pytest.approx(fold["miou_image"], abs=1e-9)
    assert again.miou_dataset == pytest.approx(fold["miou_dataset"], abs=1e-9)
    stored = read_probs(tmp_path / "run" / "fold_0" / "oof.npy")
    fresh = read_probs(tmp_path / "again" / "oof.npy")
    assert np.abs(stored.array.astype(int) - fresh.array.astype(int)).max() <= 1  # uint8 rounding of float noise
    assert json.loads((tmp_path / "run" / "fold_0" / "result.json").read_text())["image_scores"]["steps"]


def test_keep_last_keeps_the_last_epoch_even_when_an_earlier_one_scored_higher(sample_root, tmp_path, monkeypatch):
    real = fold_module.ranking_value

    def falling() -> None:  # the epochs score lower and lower
        values = iter([0.9, 0.5, 0.1])
        monkeypatch.setattr(fold_module, "ranking_value", lambda scores, metric: next(values, real(scores, metric)))

    falling()
    results = train_run(cfg_for(sample_root, epochs=3, keep="last", fold=0), tmp_path / "r", log=lambda *a: None)
    assert results["folds"][0]["best_epoch"] == 3
    falling()
    results = train_run(cfg_for(sample_root, epochs=3, fold=0), tmp_path / "b", log=lambda *a: None)
    assert results["folds"][0]["best_epoch"] == 1  # keep=best: the first (highest) epoch


def test_early_stop_counts_epochs_since_the_best_validated_one(sample_root, tmp_path, monkeypatch):
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    real = fold_module.ranking_value
    monkeypatch.setattr(fold_module, "ranking_value", lambda s, metric: next(scores, real(s, metric)))
    lines: list[str] = []
    cfg = cfg_for(sample_root, epochs=8, val_every=2, early_stop=3, fold=0)
    results = train_run(cfg, tmp_path / "run", log=lines.append)
    # validated epochs 2 (best), 4 (2 since), 6 (4 since >= 3): stopped after epoch 6, epoch 2 kept
    assert results["folds"][0]["epochs_run"] == 6 and results["folds"][0]["best_epoch"] == 2
    assert any("early stop after 6 epochs" in line for line in lines)


def test_keep_last_with_early_stop_is_refused():
    with pytest.raises(UserError, match="early_stop=2 with keep=last"):
        resolve(flags={"early_stop": 2, "keep": "last"})
    with pytest.raises(UserError, match="val_every"):
        resolve(sets=["val_every=-1"])


def test_an_epoch_without_validation_counts_as_spent_but_reports_no_value_to_the_pruner():
    import optuna

    from competition.search import make_pruning
    from competition.search.reports import TrialReports

    cfg = {**resolve(flags={"epochs": 4, "folds": 2}), "model": "unet"}
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    reports = TrialReports(trial, make_pruning("median", cfg), cfg, prunable=True)
    nan = float("nan")
    reports.epoch(0, 0, -1.0, {"miou_image": nan, "foreground_ratio": nan})  # not validated: "best" is -1
    reports.epoch(0, 1, 0.3, {"miou_image": 0.3, "foreground_ratio": 0.5})
    assert reports.epochs == 2 and trial.user_attrs["epochs"] == 2
    assert study.trials[0].intermediate_values == {1: 0.3}  # the -1 placeholder never reached the pruner
