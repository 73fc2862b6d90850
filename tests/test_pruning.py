"""k-fold-aware pruning (search/pruners.py, search/reports.py): the paired per-image Wilcoxon test after each fold,
the in-fold stop of hopeless trials, honest partial values, pruned trials ranked below complete ones, and the
explicit sampler stored with the study."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from competition import search
from competition.core.config import resolve
from competition.search.pruners import PairedWilcoxonPruner, hopeless, paired_p_value
from competition.search.reports import StopTrial, TrialReports

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True}}
IMAGES = 40  # validation images per fold in the fake runs
NOISE = np.random.default_rng(0).normal(0, 0.05, size=2 * IMAGES)  # image difficulty, the same in every trial


def test_paired_test_finds_a_worse_trial_and_refuses_to_guess():
    rng = np.random.default_rng(1)
    best = {i: 0.5 + float(x) for i, x in enumerate(rng.normal(0, 0.1, 200))}
    worse = {i: v - 0.03 + float(rng.normal(0, 0.02)) for i, v in best.items()}
    assert paired_p_value(worse, best) < 1e-6
    assert paired_p_value(best, worse) == 1.0  # better on average: never "worse"
    assert paired_p_value({i: worse[i] for i in range(10)}, best) == 1.0  # fewer than 20 pairs: no verdict
    assert paired_p_value(dict(best), best) == 1.0  # identical: no verdict
    # only common steps are paired: the best trial's other images do not enter the test
    shifted = {i + 1000: v for i, v in worse.items()}
    assert paired_p_value(shifted, best) == 1.0
    assert paired_p_value({**worse, 5: float("nan")}, best) < 1e-6  # an unscored image is left out


def test_hopeless_means_background_only_after_a_third_of_the_epochs():
    assert not hopeless({"foreground_ratio": 0.0}, epoch=0, epochs=6)  # epoch 1 of 6: still warming up
    assert hopeless({"foreground_ratio": 0.01}, epoch=1, epochs=6)
    assert not hopeless({"foreground_ratio": 0.3}, epoch=5, epochs=6)
    assert not hopeless({"foreground_ratio": float("nan")}, epoch=5, epochs=6)  # no foreground in the fold
    assert not hopeless({}, epoch=5, epochs=6)


def image_training(values_by_lr, background_for=()):
    """A stand-in for train_run with per-image fold scores: image i of fold k scores lr's value + NOISE."""
    epochs_run: dict[float, int] = {}

    def train_run(cfg, run_dir, log, on_epoch=None, on_fold=None):
        run_dir.mkdir(parents=True, exist_ok=True)
        value = values_by_lr[cfg["lr"]]
        for fold in range(cfg["folds"]):
            for epoch in range(cfg["epochs"]):
                epochs_run[cfg["lr"]] = epochs_run.get(cfg["lr"], 0) + 1
                ratio = 0.0 if cfg["lr"] in background_for else 0.6
                on_epoch(fold, epoch, value, {"foreground_ratio": ratio})
            steps = list(range(fold * IMAGES, (fold + 1) * IMAGES))
            on_fold(
                fold, {"miou": value, "image_scores": {"steps": steps, "values": [value + NOISE[s] for s in steps]}}
            )
        (run_dir / "results.json").write_text(json.dumps({"miou": value}))
        return {"miou": value}

    return train_run, epochs_run


def wilcoxon_search(tmp_path, monkeypatch, url, values, background_for=(), default_first=False):
    fake, epochs_run = image_training(values, background_for)
    monkeypatch.setattr("competition.train.train_run", fake)
    cfg = {**resolve(flags={"epochs": 3, "folds": 2}), "model": "unet", "lr": next(iter(values))}
    spec = search.StudySpec(url=url, name="s", pruner="wilcoxon", sampler="tpe", sampler_seed=0)
    study = search.open_study(spec, cfg)
    for i, lr in enumerate(values):
        study.enqueue_trial({"lr": lr}, user_attrs={"default": True} if default_first and i == 0 else None)
    job = search.SearchJob(study=spec, base=cfg, space=SPACE, runs_dir=tmp_path / "runs")
    search.launch(study, job, len(values), 1, lambda m: None)
    return search.open_study(spec, cfg), epochs_run


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_wilcoxon_prunes_after_a_fold_with_its_paired_estimate(tmp_path, monkeypatch, storage):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if storage == "sqlite" else f"journal:{tmp_path / 'journal.log'}"
    values = {1e-3: 0.5, 2e-3: 0.6, 1e-4: 0.1, 3e-4: 0.58}
    study, epochs_run = wilcoxon_search(tmp_path, monkeypatch, url, values)
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # pruned ones too: the sampler learns
    assert not search.is_pruned(by_lr[1e-3]) and not search.is_pruned(by_lr[2e-3])
    low = by_lr[1e-4]
    assert low.user_attrs["pruned"]["after_fold"] == 1 and epochs_run[1e-4] == 3  # one fold of two
    # the paired estimate: the best complete trial's CV (0.6) plus the gap on the fold both finished (0.1 - 0.6)
    assert low.value == pytest.approx(0.1)
    assert "image by image after 1 of 2 folds" in low.user_attrs["prune_reason"]
    assert sorted(low.intermediate_values) == list(range(IMAGES))  # one step per image of fold 0, by its index
    assert search.is_pruned(by_lr[3e-4])  # 0.02 below the best on every image: significant after one fold
    assert [t.params["lr"] for t in search.ranked(study.trials)][:2] == [2e-3, 1e-3]  # complete ones first
    assert search.epochs_spent(study) == 6 + 6 + 3 + 3
    results = json.loads((tmp_path / "runs" / low.user_attrs["run"] / "results.json").read_text())
    assert results["pruned"]["after_fold"] == 1 and results["miou"] == pytest.approx(low.value)


def test_the_default_trial_is_never_pruned_and_hopeless_trials_stop_inside_a_fold(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    values = {1e-3: 0.05, 2e-3: 0.6, 1e-4: 0.02}
    study, epochs_run = wilcoxon_search(
        tmp_path, monkeypatch, url, values, background_for=(1e-3, 1e-4), default_first=True
    )
    by_lr = {(t.params or t.user_attrs["params"])["lr"]: t for t in study.trials}  # trial 0: the base's lr
    assert not search.is_pruned(by_lr[1e-3]) and epochs_run[1e-3] == 6  # trial 0 (default): background, yet full
    stopped = by_lr[1e-4]
    assert stopped.user_attrs["pruned"] == {"after_fold": 0, "epochs": 2, "reason": stopped.user_attrs["prune_reason"]}
    assert "still predicts only background after fold 0 epoch 2" in stopped.user_attrs["prune_reason"]
    assert stopped.value == pytest.approx(0.02)  # its running CV mean when stopped
    assert search.best_full(study).params["lr"] == 2e-3


def test_a_background_only_trial_ahead_of_the_best_is_not_hopeless(tmp_path, monkeypatch):
    """Under the per-image mIoU a background-only model can beat every learned one (small objects): it is stopped
    only when it is also behind the best fully trained trial."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    values = {1e-3: 0.2, 1e-4: 0.4, 3e-4: 0.1}
    study, epochs_run = wilcoxon_search(tmp_path, monkeypatch, url, values, background_for=(1e-4, 3e-4))
    by_lr = {t.params["lr"]: t for t in study.trials}
    assert not search.is_pruned(by_lr[1e-4]) and epochs_run[1e-4] == 6  # ahead of trial 0 (0.2): trained in full
    behind = by_lr[3e-4]
    assert search.is_pruned(behind) and epochs_run[3e-4] == 2  # background only and behind 0.4: stopped
    assert "below trial 1's 0.4000; estimated CV 0.1000" in behind.user_attrs["prune_reason"]


def test_a_pruned_trial_with_a_high_partial_value_never_becomes_the_reference():
    """In memory (the third storage): the pruner pairs with the best *complete* trial, not Optuna's best_trial."""
    study = optuna.create_study(direction="maximize", pruner=PairedWilcoxonPruner())
    cfg = {**resolve(flags={"epochs": 1, "folds": 2}), "model": "unet"}
    pruning = search.make_pruning("wilcoxon", cfg)

    def objective(trial: optuna.Trial) -> float:
        shift = trial.suggest_float("shift", -1, 1)
        reports = TrialReports(trial, pruning, cfg, prunable=True)
        try:
            for fold in range(2):
                steps = list(range(fold * IMAGES, (fold + 1) * IMAGES))
                reports.fold(fold, {"miou": 0.5 + shift, "image_scores": {"steps": steps,
                                    "values": [0.5 + shift + NOISE[s] for s in steps]}})  # fmt: skip
        except StopTrial as e:
            trial.set_user_attr("pruned", {"after_fold": e.folds})
            return 0.99  # a partial value above every complete trial's
        return 0.5 + shift

    study.enqueue_trial({"shift": 0.0})
    study.enqueue_trial({"shift": -0.2})
    study.enqueue_trial({"shift": -0.1})
    study.optimize(objective, n_trials=3)
    assert study.best_trial.number == 1  # Optuna's best is the pruned trial with 0.99 ...
    assert search.best_full(study).number == 0  # ... ours, and the pruner's reference, is trial 0:
    # trial 2 (0.4) is better than trial 1 (0.3) on their common images, worse than trial 0 (0.5): pruned
    assert [search.is_pruned(t) for t in study.trials] == [False, True, True]


def test_sampler_and_pruner_are_stored_and_a_change_is_said_in_one_line(tmp_path):
    from competition.search.study import StudySpec, prepare_study

    cfg = {**resolve(flags={"epochs": 1, "folds": 2}), "model": "unet", "data": "d"}
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    lines: list[str] = []

    def prepare(spec):
        return prepare_study(spec, cfg, {}, runs_dir=tmp_path, force=False, log=lines.append)

    study, spec, _ = prepare(StudySpec(url=url, name="s"))
    assert (spec.pruner, spec.sampler) == ("median", "tpe")
    assert study.user_attrs["strategy"] == {"pruner": "median", "sampler": "tpe"}
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    again = StudySpec(url=url, name="s", sampler="gp")  # the pruner is not given: the study's is kept
    study, spec, _ = prepare(again)
    assert (spec.pruner, spec.sampler) == ("median", "gp") and isinstance(study.sampler, optuna.samplers.GPSampler)
    assert [line for line in lines if "sampler" in line] == ["study s: sampler tpe until now, gp from here on"]
    study, spec, _ = prepare(StudySpec(url=url, name="s"))
    assert spec.sampler == "gp"  # nothing asked: the study's stored sampler


@pytest.mark.parametrize("name", search.SAMPLERS.names)
def test_every_declared_sampler_builds_and_proposes(name):
    study = optuna.create_study(direction="maximize", sampler=search.make_sampler(name, 0))
    study.optimize(lambda t: -((t.suggest_float("x", -1, 1) - 0.3) ** 2), n_trials=3)
    assert len(study.trials) == 3


@pytest.mark.parametrize("name", search.PRUNERS.names)
def test_every_declared_pruner_builds(name):
    pruning = search.make_pruning(name, resolve(flags={"epochs": 3, "folds": 2}))
    assert isinstance(pruning.pruner, optuna.pruners.BasePruner) and pruning.reports in ("epochs", "images", "nothing")


def test_unknown_sampler_is_a_usage_error_with_the_closest_name():
    from competition.core.errors import UsageError

    with pytest.raises(UsageError, match="sampler 'tpee'.*did you mean 'tpe'"):
        search.make_sampler("tpee", 0)
