"""A study: opened in one place (`open_study`), created once per storage and name (serialised between the
processes of one machine), with its pruner and sampler (stored with it), its model, its fixed settings, and its
trial 0 (the default configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from competition.core.config import differences, short
from competition.core.errors import UsageError
from competition.core.locks import exclusive_lock
from competition.core.log import Log
from competition.search.pruners import make_pruning
from competition.search.samplers import make_sampler
from competition.search.storage import open_storage, safe_url


@dataclass(frozen=True, kw_only=True)
class StudySpec:
    """Where a study lives and how it searches (picklable: every worker process opens the study from it)."""

    url: str
    name: str
    pruner: str | None = None  # None: the study's stored one, else DEFAULT_STRATEGY's
    sampler: str | None = None
    sampler_seed: int | None = None


DEFAULT_STRATEGY = {"pruner": "median", "sampler": "tpe"}


def open_study(spec: StudySpec, cfg: dict[str, Any]) -> optuna.Study:
    """The study (created when missing) with its sampler and pruner: the one place a study is opened."""
    # progress is ours: one line per trial, failures with their reason (Optuna's would add a traceback)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        storage=open_storage(spec.url), study_name=spec.name, direction="maximize", load_if_exists=True
    )
    return configure(study, spec, cfg)


def configure(study: optuna.Study, spec: StudySpec, cfg: dict[str, Any]) -> optuna.Study:
    """Give the study the spec's sampler and pruner (built for these settings: epochs and folds)."""
    study.sampler = make_sampler(spec.sampler or DEFAULT_STRATEGY["sampler"], spec.sampler_seed)
    study.pruner = make_pruning(spec.pruner or DEFAULT_STRATEGY["pruner"], cfg).pruner
    return study


def resolve_strategy(spec: StudySpec, stored: dict[str, Any], log: Log) -> StudySpec:
    """The pruner and sampler of this search: the ones asked for, else the study's stored ones, else the
    defaults. Continuing a study with another one says so in one line."""
    chosen = {}
    for key, default in DEFAULT_STRATEGY.items():
        asked, before = getattr(spec, key), stored.get(key)
        if asked and before and asked != before:
            log(f"study {spec.name}: {key} {before} until now, {asked} from here on")
        chosen[key] = asked or before or default
    return replace(spec, **chosen)


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
    spec: StudySpec, cfg: dict[str, Any], fixed: dict[str, Any], *, runs_dir: Path, force: bool, log: Log
) -> tuple[optuna.Study, StudySpec, dict[str, Any]]:
    """Create or continue the study: check its model, pin its fixed settings, its pruner and sampler, queue the
    default as trial 0.

    Serialised between the processes of this machine, so searches started together queue one trial 0.
    Returns the opened study, its resolved spec and its fixed settings (stored ones included).
    """
    with exclusive_lock(Path(runs_dir) / ".owners" / "setup.lock"):
        study = open_study(spec, cfg)
        stored = study.user_attrs.get("strategy") or {}
        spec = resolve_strategy(spec, stored, log)
        recorded = study.user_attrs.get("model")
        if recorded and recorded != cfg["model"]:
            raise UsageError(
                f"study {spec.name!r} in {safe_url(spec.url)} searches {recorded}, not {cfg['model']}; "
                "choose another --study"
            )
        study.set_user_attr("model", cfg["model"])
        strategy = {"pruner": spec.pruner, "sampler": spec.sampler}
        if stored != strategy:
            study.set_user_attr("strategy", strategy)
        fixed = pin_fixed(study, fixed, cfg["data"], force, log)
        if not study.trials:
            study.enqueue_trial({}, user_attrs={"default": True})
            log("trial 0 is the model's default configuration")
    return study, spec, fixed
