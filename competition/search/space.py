"""Search spaces: setting -> {type: float|int|categorical, ...}, from the registry or a YAML/JSON file, checked
against the settings' types and ranges; sampling a configuration; trial 0's default configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from competition.core.config import check_key, check_setting
from competition.core.errors import UsageError
from competition.core.yamlfile import read_config_file

SPACE_TYPES = ("float", "int", "categorical")


def load_space(path: Path) -> dict[str, Any]:
    """A search space file (YAML or JSON): setting -> {type: float|int|categorical, ...}."""
    space = read_config_file(path)
    check_space(space, str(path))
    return space


def check_space(space: dict[str, Any], source: str) -> None:
    """Every key a setting, every bound and choice a valid value of it (UsageError naming the key)."""
    for key, spec in space.items():
        check_key(key, source)
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise UsageError(f"{source}: {key}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise UsageError(f"{source}: {key}: categorical needs a non-empty 'choices' list")
            values = spec["choices"]
        else:
            if not all(k in spec for k in ("low", "high")):
                raise UsageError(f"{source}: {key}: {spec['type']} needs 'low' and 'high'")
            values = [spec["low"], spec["high"]]
        values = [check_setting(key, value, source) for value in values]
        if spec["type"] == "categorical":
            spec["choices"] = values
        else:
            if not values[0] <= values[1]:
                raise UsageError(f"{source}: {key}: {spec['type']} needs 'low' <= 'high'")
            spec["low"], spec["high"] = values  # normalised: YAML reads 1e-4 as a string


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """Sample one configuration from the space."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            params[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False))
        elif spec["type"] == "int":
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
        else:
            params[key] = trial.suggest_categorical(key, spec["choices"])
    return params


def default_params(space: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The default configuration's value of every searched setting (inside the space's range or not)."""
    return {key: cfg.get(key) for key in space}


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The searched settings of a trial: sampled ones, or the default configuration's for trial 0."""
    return trial.params or trial.user_attrs.get("params", {})
