"""PNG plots of a study (optuna.visualization.matplotlib): optimisation history, parameter importances,
parallel coordinates, intermediate values (the pruning picture)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.visualization import matplotlib as ovm

from competition.core.plotting import Figure, plt, save_png

PLOTS: dict[str, Callable] = {
    "optimization_history.png": ovm.plot_optimization_history,
    "param_importances.png": ovm.plot_param_importances,
    "parallel_coordinate.png": ovm.plot_parallel_coordinate,
    "intermediate_values.png": ovm.plot_intermediate_values,
}


def study_figures(study: optuna.Study, log: Callable[[str], None] = print) -> dict[str, Figure]:
    """Each plot that the study has enough trials for (by file name); say which were skipped and why.
    The caller closes the figures."""
    figures = {}
    for name, plot in PLOTS.items():
        before = set(plt.get_fignums())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
                ax = plot(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            figures[name] = fig
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances need 2+ complete trials
            for number in set(plt.get_fignums()) - before:  # this plot's half-made figure, not the others
                plt.close(number)
            log(f"plot {name} skipped: {str(e).splitlines()[0][:120]}")
    return figures


def save_study_plots(study: optuna.Study, out_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Write each plot that the study has enough trials for; say which were skipped and why."""
    written = []
    for name, fig in study_figures(study, log).items():
        save_png(fig, out_dir / name)
        written.append(out_dir / name)
    return written
