"""The sampler table (`--sampler`): what proposes each trial's settings, with every option that matters set
explicitly, so a search behaves the same whichever Optuna version is installed.

- `tpe` (default): TPESampler, multivariate (it models the settings jointly: lr and batch size interact) with
  group decomposition (conditional spaces), constant liar (parallel workers do not all propose the same point
  while earlier trials run) and 10 random start-up trials.
- `gp`: GPSampler, a Gaussian process with expected improvement: the better choice for small budgets (tens of
  trials) over a few continuous settings.
- `random`: RandomSampler, the baseline any sampler must beat.
- `qmc`: QMCSampler (scrambled Sobol): even coverage of the space, for a first sweep.

Pruned trials end COMPLETE with an honest partial value (search/objective.py), so every sampler learns from them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from competition.core.names import NAMES, Table

Builder = Callable[[int | None], optuna.samplers.BaseSampler]


def _quiet(build: Builder) -> Builder:
    """Optuna marks some of these options experimental: a warning per process that says nothing to a user."""

    def built(seed: int | None) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return build(seed)

    return built


def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10, n_ei_candidates=24
    )


def _gp(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10, deterministic_objective=False)


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _qmc(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)


BUILDERS = {"tpe": _tpe, "gp": _gp, "random": _random, "qmc": _qmc}
SAMPLERS: Table[Builder] = Table("sampler", NAMES["sampler"], {name: _quiet(b) for name, b in BUILDERS.items()})


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The named sampler with its seed (None: a random stream)."""
    return SAMPLERS[name](seed)
