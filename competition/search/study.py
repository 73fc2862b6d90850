"""A study: created once per storage and name (serialised between the processes of one machine), its pruner,
its model, its fixed settings, and its trial 0 (the default configuration).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from competition.core.config import differences, short
from competition.core.errors import UsageError
from competition.core.log import Log
from competition.search.storage import open_storage, safe_url


def make_pruner(kind: str, cfg: dict[str, Any]) -> optuna.pruners.BasePruner:
    epochs = int(cfg["epochs"])
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, epochs // 3))
    if kind == "hyperband":
        folds = 1 if cfg["split"] == "official" else int(cfg["folds"])
        return optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 3), max_resource=folds * epochs)
    return optuna.pruners.NopPruner()


def create_study(url: str, name: str, cfg: dict[str, Any], pruner: str, seed: int | None) -> optuna.Study:
    """Create (or load) the study once, before any worker starts (avoids the table-creation race)."""
    # progress is ours: one line per trial, failures with their reason (Optuna's would add a traceback)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        storage=open_storage(url),
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(pruner, cfg),
    )
    return study


def pin_fixed(study: optuna.Study, fixed: dict[str, Any], data: str, force: bool, log: Log) -> dict[str, Any]:
    """The study's fixed settings after this search: those stored with it, updated by the user's.

    A study continued with other values for its fixed settings (or other data) would mix trials of different
    problems: refused (UsageError naming the keys) unless `force`. Settings fixed before and not given now stay.
    """
    stored = study.user_attrs.get("fixed")
    if stored is not None:
        changed = differences(stored, fixed)
        old_data = study.user_attrs.get("data")
        if old_data and old_data != data:
            changed.append(f"data ({old_data} -> {data})")
        if changed and not force:
            raise UsageError(
                f"study {study.study_name!r} was searched with other settings: {', '.join(changed)}; "
                "give the same values, choose another --study, or --force"
            )
        inherited = {k: v for k, v in stored.items() if k not in fixed}
        if inherited:
            log("fixed by the study: " + ", ".join(f"{k}={short(v)}" for k, v in inherited.items()))
        fixed = {**inherited, **fixed}
    if stored != fixed or study.user_attrs.get("data") != data:
        study.set_user_attr("fixed", fixed)
        study.set_user_attr("data", data)
    return fixed


def prepare_study(
    url: str,
    name: str,
    cfg: dict[str, Any],
    fixed: dict[str, Any],
    pruner: str,
    seed: int | None,
    runs_dir: Path,
    force: bool,
    log: Log,
) -> dict[str, Any]:
    """Create or continue the study: check its model, pin its fixed settings, queue the default as trial 0.

    Serialised between the processes of this machine, so searches started together queue one trial 0.
    Returns the study's fixed settings (stored ones included).
    """
    with setup_lock(runs_dir):
        study = create_study(url, name, cfg, pruner, seed)
        recorded = study.user_attrs.get("model")
        if recorded and recorded != cfg["model"]:
            raise UsageError(
                f"study {name!r} in {safe_url(url)} searches {recorded}, not {cfg['model']}; choose another --study"
            )
        study.set_user_attr("model", cfg["model"])
        fixed = pin_fixed(study, fixed, cfg["data"], force, log)
        if not study.trials:
            study.enqueue_trial({}, user_attrs={"default": True})
            log("trial 0 is the model's default configuration")
    return fixed


@contextlib.contextmanager
def setup_lock(runs_dir: Path) -> Iterator[None]:
    """Serialises the start-up of searches on one machine (creating a study, queueing its default trial)."""
    folder = Path(runs_dir) / ".owners"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "setup.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
