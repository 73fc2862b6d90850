"""Run references to search trials: `trial:STUDY:NUMBER` and `best:STUDY` (the best complete trial).

Resolved from the run folders themselves (each trial's run.json records its study and number), so predict
and ensemble work wherever the run folders are, without opening the study's database.
"""

from __future__ import annotations

from pathlib import Path

from competition.errors import UserError
from competition.runs import list_runs, read_run


def resolve_trial_ref(runs_dir: Path, ref: str) -> Path:
    kind, _, rest = ref.partition(":")
    study, _, number = rest.partition(":")
    if not study or (kind == "trial") != bool(number):
        raise UserError(f"run reference {ref!r}: expected trial:STUDY:NUMBER or best:STUDY")
    trials = [(read_run(p), p) for p in list_runs(runs_dir)]
    trials = [(info, p) for info, p in trials if (info.get("trial") or {}).get("study") == study]
    if not trials:
        raise UserError(f"{runs_dir}: no trials of study {study!r} (see ./run.sh leaderboard)")
    if kind == "trial":
        for info, path in trials:
            if str(info["trial"]["number"]) == number:
                return path
        raise UserError(f"{runs_dir}: study {study!r} has no trial {number}")
    complete = [(info, p) for info, p in trials if info.get("status") == "complete" and "miou" in info]
    if not complete:
        raise UserError(f"{runs_dir}: study {study!r} has no complete trial yet")
    return max(complete, key=lambda x: x[0]["miou"])[1]
