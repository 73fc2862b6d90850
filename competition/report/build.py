"""`report`: one self-contained HTML file of a runs folder: the leaderboard (CV beside LB), the CV-vs-LB scatter,
for the best runs their learning curves, per-class IoU, out-of-fold confusion matrix and worst validation images
with prediction overlays, and each study's history, importances and parallel coordinates.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from competition.core.errors import UserError
from competition.core.fileio import write_text
from competition.core.log import Log
from competition.core.runs import list_runs, read_run
from competition.report.figures import confusion_uri, figure_uri, file_uri, scatter_uri, worst_uri
from competition.report.html import image, leaderboard_table, page, table
from competition.report.oof import analyse_oof
from competition.search import best_full, count_trials, open_storage, safe_url, study_figures
from competition.train import leaderboard_rows

STUDY_PLOTS = {
    "optimization_history.png": "optimisation history",
    "param_importances.png": "parameter importances",
    "parallel_coordinate.png": "parallel coordinates",
    "intermediate_values.png": "intermediate values (running CV mean per step: what pruning sees)",
}


def default_storage(runs_dir: Path) -> str | None:
    """The search's default storage, when the runs folder has one."""
    db = Path(runs_dir) / "optuna.db"
    return f"sqlite:///{db.resolve()}" if db.is_file() else None


def write_report(
    runs_dir: Path, out: Path | None = None, storage: str | None = None, top: int = 5, worst: int = 6, log: Log = print
) -> dict[str, Any]:
    """Write the report (default RUNS/report.html); returns where, and how much it holds."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"{runs_dir}: no runs folder (train or search first, or give --runs-dir)")
    out = Path(out) if out else runs_dir / "report.html"
    rows = leaderboard_rows(runs_dir)
    log(f"report of {runs_dir}: {len(rows)} finished runs; details of the best {min(top, len(rows))}")
    counts = {"images": 0}
    sections = [("leaderboard", "Leaderboard", _leaderboard(rows, runs_dir))]
    sections.append(("cv-lb", "CV vs leaderboard", _cv_lb(rows, counts)))
    sections.append(("runs", "Runs", _runs(rows[:top], worst, counts, log)))
    url = storage or default_storage(runs_dir)
    studies_html, studies = _studies(url, counts, log)
    sections.append(("studies", "Studies", studies_html))
    subtitle = f"{runs_dir.resolve()} - generated {datetime.now():%Y-%m-%d %H:%M:%S}"
    write_text(out, page(f"Runs report: {runs_dir.name}", subtitle, sections))
    log(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, {counts['images']} images, {studies} studies)")
    return {"report": str(out), "runs": len(rows), "detailed": min(top, len(rows)), "studies": studies, **counts}


def _leaderboard(rows: list[dict[str, Any]], runs_dir: Path) -> str:
    if not rows:
        return '<p class="note">no finished runs yet: ./run.sh train MODEL or ./run.sh search MODEL</p>'
    others = [read_run(p) for p in list_runs(runs_dir)]
    unfinished = [i for i in others if i.get("status") not in ("complete", None)]
    note = ""
    if unfinished:
        states = sorted({str(i.get("status")) for i in unfinished})
        note = f'<p class="note">{len(unfinished)} other run folders are not complete ({", ".join(states)}).</p>'
    return leaderboard_table(rows) + note


def _cv_lb(rows: list[dict[str, Any]], counts: dict[str, int]) -> str:
    summary = rows[0]["cv_lb"] if rows else {"n": 0}
    if not summary["n"]:
        return '<p class="note">no leaderboard scores recorded yet: ./run.sh lb CSV SCORE</p>'
    counts["images"] += 1
    lines = []
    if summary.get("kendall_tau") is not None:
        lines.append(
            f"<p>Kendall tau (CV vs public LB, {summary['n']} scored runs): <b>{summary['kendall_tau']:+.3f}</b>; "
            f"mean CV - LB gap <b>{summary['mean_gap']:+.4f}</b>.</p>"
        )
    else:
        lines.append(f'<p class="note">{summary["n"]} scored run(s); the rank correlation needs three.</p>')
    unmatched = rows[0].get("lb_unmatched", [])
    if unmatched:
        lines.append(table(("scored CSV made by no run here", "LB"), [(u["csv"], u["public"]) for u in unmatched],
                           (False, True)))  # fmt: skip
    return image(scatter_uri(rows, summary), "CV against public LB", "") + "".join(lines)


def _runs(rows: list[dict[str, Any]], worst: int, counts: dict[str, int], log: Log) -> str:
    if not rows:
        return '<p class="note">no finished runs yet</p>'
    parts = []
    for r in rows:
        run_dir = Path(r["dir"])
        head = f'<h3 id="run-{escape(r["run"])}">{escape(r["run"])} ({escape(r["kind"])}, {escape(r["model"])})</h3>'
        score = f"<p>CV mIoU {r['miou']:.4f} ± {r['miou_std']:.4f} ({escape(r['metric'])}); {escape(r['settings'])}</p>"
        pictures = []
        if r["kind"] == "ensemble":
            pictures.append('<p class="note">an ensemble: its members are detailed as runs of their own</p>')
        else:
            pictures.append(
                image(file_uri(run_dir / "learning_curves.png"), "learning curves", "no learning_curves.png")
            )
            pictures.append(image(file_uri(run_dir / "per_class_iou.png"), "per-class IoU", "no per_class_iou.png"))
            pictures += _oof_pictures(run_dir, worst, log)
        counts["images"] += sum(p.count("<img") for p in pictures)
        parts.append(head + score + '<div class="grid">' + "".join(pictures) + "</div>")
    return "\n".join(parts)


def _oof_pictures(run_dir: Path, worst: int, log: Log) -> list[str]:
    """Confusion matrix and worst images from the out-of-fold probabilities, or why there are none."""
    try:
        analysis = analyse_oof(run_dir, worst)
    except UserError as e:  # no oof.npy (pruned, deleted by --keep-oof), data moved: the report says so
        log(f"{run_dir.name}: no out-of-fold analysis: {e}")
        return [f'<p class="note">no confusion matrix or worst images: {escape(str(e))}</p>']
    return [
        image(confusion_uri(analysis), "out-of-fold confusion matrix", ""),
        image(worst_uri(analysis), f"the {worst} worst validation images", "no scored validation image"),
    ]


def _studies(url: str | None, counts: dict[str, int], log: Log) -> tuple[str, int]:
    if url is None:
        return '<p class="note">no study storage in this runs folder (./run.sh search MODEL makes one)</p>', 0
    storage = open_storage(url)
    names = optuna.study.get_all_study_names(storage)
    if not names:
        return f'<p class="note">no studies in {escape(safe_url(url))}</p>', 0
    parts = [f"<p>storage {escape(safe_url(url))}</p>"]
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        state = count_trials(trials)
        best = best_full(study)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        summary = (
            f"{len(trials)} trials: {state['complete']} complete, {state['pruned']} pruned, "
            f"{state['failed']} failed, {running} running"
        )
        if best is not None:
            summary += f"; best trial {best.number}: {best.value:.4f} ({best.user_attrs.get('run', '')})"
        made = study_figures(study, log=lambda m, name=name: log(f"study {name}: {m}"))
        pictures = [image(figure_uri(fig), STUDY_PLOTS[key], "") for key, fig in made.items()]
        missing = [STUDY_PLOTS[k] for k in STUDY_PLOTS if k not in made]
        if missing:
            pictures.append(f'<p class="note">not enough trials yet for: {escape(", ".join(missing))}</p>')
        counts["images"] += len(made)
        parts.append(f"<h3>{escape(name)}</h3><p>{escape(summary)}</p>" + "".join(pictures))
    return "\n".join(parts), len(names)
