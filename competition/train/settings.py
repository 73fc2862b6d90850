"""The settings of a training run: a new run's (defaults < model < quick profile < what the user gave) and a
resumed run's (its saved settings; given ones that would change its results are refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import models
from competition.core.config import QUICK_PROFILE, describe, differences, resolve, validate
from competition.core.errors import UsageError
from competition.core.log import Log
from competition.core.runs import read_config
from competition.data import DataRoot, is_sample, resolve_data_root
from competition.train.trackers import check_trackers


def new_run_settings(model: str, data: str | None, given: dict[str, Any], log: Log) -> dict[str, Any]:
    """Settings of a new run of `model` on dataset `data` (None: the default root) with the user's `given`
    settings (config.user_settings, already checked); the sample dataset brings the quick profile."""
    spec = models.get_spec(model)
    root = resolve_data_root(data, log)
    quick = is_sample(root)
    if quick:
        log(f"profile: quick (sample data): {describe(QUICK_PROFILE)}")
    cfg = resolve(spec.defaults, profile=QUICK_PROFILE if quick else None, given=given)
    cfg.update(model=spec.name, data=str(root))
    check_against_data(cfg)
    check_trackers(cfg)
    return cfg


def check_against_data(cfg: dict[str, Any]) -> None:
    """Settings that depend on the dataset: the class policy and one class weight per class."""
    classes = DataRoot(Path(cfg["data"]), check_images=False).classes(cfg["classes"], cfg["ignore_index"])
    weights = cfg["class_weights"]
    if isinstance(weights, list) and len(weights) != classes.num_classes:
        names = ", ".join(classes.names)
        raise UsageError(f"setting class_weights: {len(weights)} values for {classes.num_classes} classes ({names})")


def resume_settings(
    run_dir: Path, model: str, data: str | None, given: dict[str, Any], force: bool, log: Log
) -> dict[str, Any]:
    """A run's saved settings; `given` settings that would change its results are refused unless `force`."""
    cfg = read_config(run_dir)
    if cfg["model"] != model:
        raise UsageError(f"{run_dir}: run of model {cfg['model']}, not {model}")
    given = dict(given)
    if data:
        root = resolve_data_root(data, log)
        given["data"] = cfg["data"] if root.resolve() == Path(cfg["data"]).resolve() else str(root)
    changed = differences(cfg, given)
    if changed and not force:
        raise UsageError(
            f"{run_dir}: resuming with other settings would change its results: {', '.join(changed)}; "
            "drop them, start a new run, or --force"
        )
    if given:
        log(f"resuming with: {describe(given)}")
    log(f"resuming {run_dir} with its saved settings")
    cfg = validate({**cfg, **given})
    check_trackers(cfg)
    return cfg
