"""Leaderboard scores of submissions: `lb CSV SCORE [--private SCORE]` records what the competition's
leaderboard gave a CSV, keyed by the SHA-256 of its content, so a renamed or copied file is the same
submission. The records live in one small JSON file in the runs folder (`runs/lb_scores.json`), written
atomically under a file lock, so concurrent `lb` calls lose no record.

Each record names the run (trained run, trial or ensemble) that made the CSV when it can be found: the CSV's
own `.json` sidecar, or the sidecar of any CSV with the same content in the submissions folder or named by a
run folder's results.json (`csv`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from competition.core.errors import UsageError, UserError
from competition.core.fileio import file_sha256, read_json, write_json
from competition.core.locks import exclusive_lock
from competition.core.names import PLAIN_NAME
from competition.core.runs import list_runs, now, read_run
from competition.submit.save import SUBMISSIONS

LB_FILE = "lb_scores.json"


def lb_path(runs_dir: Path) -> Path:
    return Path(runs_dir) / LB_FILE


def read_lb(runs_dir: Path) -> dict[str, dict[str, Any]]:
    """sha256 -> record ({public, private, csv, run, recorded}); empty when nothing was recorded."""
    path = lb_path(runs_dir)
    if not path.exists():
        return {}
    try:
        data = read_json(path)
        return dict(data["scores"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a leaderboard-score file ({e}); move it away to start afresh") from None


def check_score(value: float, option: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise UsageError(f"{option} {value}: a leaderboard mIoU is a number in 0..1 (0.6123, not 61.23)")
    return float(value)


def record_lb(
    csv: Path,
    public: float,
    private: float | None,
    runs_dir: Path,
    submissions: Path = SUBMISSIONS,
) -> dict[str, Any]:
    """Record the leaderboard score(s) of a submission CSV; returns the record (with its sha256)."""
    csv = Path(csv)
    public = check_score(public, "SCORE")
    private = None if private is None else check_score(private, "--private")
    if not csv.is_file():
        raise UserError(f"{csv}: no such submission file")
    digest = file_sha256(csv)
    run = find_origin(digest, csv, runs_dir, submissions)
    path = lb_path(runs_dir)
    with exclusive_lock(path.with_name(f".{LB_FILE}.lock")):
        scores = read_lb(runs_dir)
        old = scores.get(digest, {})
        record = {
            "public": public,
            "private": private if private is not None else old.get("private"),
            "csv": str(csv),
            "run": run or old.get("run"),
            "recorded": now(),
        }
        scores[digest] = record
        write_json(path, {"version": 1, "scores": scores})
    return {"sha256": digest, **record}


def candidate_csvs(csv: Path | None, runs_dir: Path, submissions: Path) -> Iterator[Path]:
    """Where a submission's sidecar may be: next to the CSV itself, in the submissions folder, or the CSV a run
    folder's results.json names (ensembles)."""
    if csv is not None:
        yield csv
    if Path(submissions).is_dir():
        yield from sorted(Path(submissions).glob("*.csv"))
    for run_dir in list_runs(runs_dir):
        named = read_run(run_dir).get("csv")
        if isinstance(named, str) and named.endswith(".csv"):
            yield Path(named)


def find_origin(digest: str, csv: Path | None, runs_dir: Path, submissions: Path = SUBMISSIONS) -> str | None:
    """The run id that made the submission with this content, or None (e.g. a hard vote of CSVs)."""
    size = csv.stat().st_size if csv is not None else None
    for path in candidate_csvs(csv, runs_dir, submissions):
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            continue
        try:
            meta = read_json(sidecar)
        except ValueError:
            continue  # not a sidecar the harness wrote
        if not isinstance(meta, dict):
            continue
        if meta.get("sha256"):
            same = meta["sha256"] == digest
        elif size is not None:  # a sidecar written before hashes were: hash only files of the same size
            same = path.stat().st_size == size and file_sha256(path) == digest
        else:
            continue
        if same:
            run = _run_of(meta, path, runs_dir)
            if run:
                return run
    return None


def _run_of(meta: dict[str, Any], csv: Path, runs_dir: Path) -> str | None:
    """The run a sidecar names, when it is a plain run name (a sidecar is a file anyone can edit: a name that
    is not one is no origin, never a path)."""
    run = meta.get("run") or _ensemble_of(csv, runs_dir)
    return run if isinstance(run, str) and PLAIN_NAME.fullmatch(run) else None


def _ensemble_of(csv: Path, runs_dir: Path) -> str | None:
    """An older ensemble's sidecar has no `run`: its run folder has the CSV's name."""
    if not PLAIN_NAME.fullmatch(csv.stem):
        return None
    run_dir = Path(runs_dir) / csv.stem
    if (run_dir / "run.json").exists() and read_run(run_dir).get("kind") == "ensemble":
        return run_dir.name
    return None


def submission_index(runs_dir: Path, submissions: Path = SUBMISSIONS) -> dict[str, set[str]]:
    """sha256 -> the runs that made a CSV with that content, from the sidecars that record both."""
    index: dict[str, set[str]] = {}
    for path in candidate_csvs(None, runs_dir, submissions):
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            continue
        try:
            meta = read_json(sidecar)
        except ValueError:
            continue
        if isinstance(meta, dict) and meta.get("sha256"):
            run = _run_of(meta, path, runs_dir)
            if run:
                index.setdefault(meta["sha256"], set()).add(str(run))
    return index


def scored_runs(runs_dir: Path, submissions: Path = SUBMISSIONS) -> tuple[dict[str, list[dict[str, Any]]], list]:
    """Recorded scores by run id (each record with its sha256; a CSV that several runs made, e.g. two runs that
    both predict only background, scores for each), and the records that match no run."""
    index = submission_index(runs_dir, submissions)
    by_run: dict[str, list[dict[str, Any]]] = {}
    unmatched = []
    for digest, record in read_lb(runs_dir).items():
        runs = index.get(digest, set()) | ({record["run"]} if record.get("run") else set())
        entry = {"sha256": digest, **record}
        for run in sorted(runs):
            by_run.setdefault(run, []).append(entry)
        if not runs:
            unmatched.append(entry)
    return by_run, unmatched
