"""`ensemble --select top:K`: members picked from the leaderboard, distinct models first."""

from __future__ import annotations

from pathlib import Path

from competition.core.errors import UsageError, UserError
from competition.core.log import Log
from competition.train import leaderboard_rows


def parse_select(spec: str) -> int:
    """`top:K` -> K (2 or more)."""
    kind, _, count = spec.partition(":")
    if kind != "top" or not count.isdigit() or int(count) < 2:
        raise UsageError(f"--select {spec!r}: expected top:K with K >= 2, e.g. top:4")
    return int(count)


def select_members(spec: str, runs_dir: Path, log: Log) -> list[str]:
    """The K best trained runs with out-of-fold probabilities (ranked with the best one's metric): the best
    run of each model first, in leaderboard order, then the next best runs of any model."""
    k = parse_select(spec)
    rows = [
        r
        for r in leaderboard_rows(runs_dir)
        if r["kind"] != "ensemble" and not r["background_only"] and any(Path(r["dir"]).glob("fold_*/oof.npy"))
    ]
    rows = [r for r in rows if r["metric"] == rows[0]["metric"]] if rows else []
    if len(rows) < k:
        raise UserError(
            f"--select {spec}: {runs_dir} has {len(rows)} complete runs with out-of-fold probabilities "
            "(not background-only, same ranking metric); train more or ask for fewer"
        )
    firsts, seen = [], set()
    for row in rows:
        if row["model"] not in seen:
            seen.add(row["model"])
            firsts.append(row)
    chosen = (firsts + [r for r in rows if r not in firsts])[:k]
    log(f"--select {spec}: " + ", ".join(f"{Path(r['dir']).name} ({r['model']}, {r['miou']:.4f})" for r in chosen))
    return [r["dir"] for r in chosen]  # folders: a run is found by its folder whatever its id
