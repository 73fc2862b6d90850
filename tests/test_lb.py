"""`lb CSV SCORE`: leaderboard scores recorded by content, shown beside CV by `leaderboard`, with the CV-LB rank
correlation and gap once three runs are scored."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from itertools import combinations
from pathlib import Path

import pytest

from competition.cli import main
from competition.core.fileio import read_json
from competition.submit import read_lb, record_lb


def workspace(small_runs: Path, here: Path) -> Path:
    """A hard-linked copy of the shared runs and submissions folders in `here` (the test's working folder)."""
    for name in ("runs", "submissions"):
        shutil.copytree(small_runs / name, here / name, copy_function=os.link)
    return here


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def leaderboard_json(capsys) -> list[dict]:
    code, out, err = cli(capsys, "leaderboard", "--json")
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def brute_force_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b by counting pairs one by one."""
    concordant = discordant = tied_x = tied_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tied_x += 1
        elif dy == 0:
            tied_y += 1
        elif (dx > 0) == (dy > 0):
            concordant += 1
        else:
            discordant += 1
    n0 = concordant + discordant
    return (concordant - discordant) / ((n0 + tied_x) * (n0 + tied_y)) ** 0.5


def test_scores_join_runs_by_content_and_rank_correlation_appears_at_three(small_runs, tmp_path, capsys):
    workspace(small_runs, tmp_path)
    copy = tmp_path / "elsewhere" / "what-i-uploaded.csv"  # a renamed copy, without its sidecar
    copy.parent.mkdir()
    shutil.copy(tmp_path / "submissions" / "run-a.csv", copy)

    code, out, err = cli(capsys, "lb", str(copy), "0.41", "--json")
    assert code == 0, err
    record = json.loads(out.strip().splitlines()[-1])
    assert record["run"] == "run-a" and record["public"] == 0.41 and record["private"] is None
    assert read_json(Path("submissions/run-a.json"))["sha256"] == record["sha256"]

    code, out, _ = cli(capsys, "lb", "submissions/run-b.csv", "0.47", "--private", "0.45")
    assert code == 0 and "made by run run-b: CV" in out
    rows = {r["run"]: r for r in leaderboard_json(capsys)}
    assert rows["run-a"]["lb_public"] == 0.41 and rows["run-b"]["lb_private"] == 0.45
    assert rows["ens"]["lb_public"] is None
    assert rows["run-a"]["cv_lb"]["n"] == 2 and rows["run-a"]["cv_lb"]["kendall_tau"] is None
    code, out, _ = cli(capsys, "leaderboard")
    assert "the rank correlation needs 3" in out

    assert cli(capsys, "lb", "submissions/ens.csv", "0.52")[0] == 0
    rows = leaderboard_json(capsys)
    cv = [r["miou"] for r in rows if r["lb_public"] is not None]
    lb = [r["lb_public"] for r in rows if r["lb_public"] is not None]
    assert len(cv) == 3  # run-a, run-b and ens (a CSV two runs made would score for both)
    summary = rows[0]["cv_lb"]
    assert summary["n"] == 3
    assert summary["kendall_tau"] == pytest.approx(brute_force_tau(cv, lb))
    assert summary["mean_gap"] == pytest.approx(sum(c - v for c, v in zip(cv, lb, strict=True)) / 3)
    for r in rows:
        if r["lb_public"] is not None:
            assert r["lb_gap"] == pytest.approx(r["miou"] - r["lb_public"])
    code, out, _ = cli(capsys, "leaderboard")
    header = out.splitlines()[0].split()
    assert header[:4] == ["#", "CV", "mIoU", "LB"] and "private" in header
    assert "CV vs LB over 3 scored runs: Kendall tau" in out

    # the same content again: the new public score replaces the old, the private score stays
    assert cli(capsys, "lb", "submissions/run-b.csv", "0.48")[0] == 0
    scores = read_lb(Path("runs"))
    assert len(scores) == 3
    b = next(r for r in scores.values() if r["run"] == "run-b")
    assert b["public"] == 0.48 and b["private"] == 0.45


def test_a_csv_no_run_made_is_kept_and_listed(small_runs, tmp_path, capsys):
    workspace(small_runs, tmp_path)
    other = tmp_path / "hand-made.csv"
    header, first, rest = (tmp_path / "submissions" / "run-a.csv").read_text().split("\n", 2)
    image, values = first.split(",", 1)
    changed = ("1" if values[0] != "1" else "2") + values[1:]  # another class at the first pixel
    other.write_text("\n".join([header, f"{image},{changed}", rest]))
    code, out, _ = cli(capsys, "lb", str(other), "0.3")
    assert code == 0 and "made by no run" in out
    code, out, _ = cli(capsys, "leaderboard")
    assert f"LB 0.3000 for {other}: made by no run in this folder" in out


def test_bad_scores_and_files_are_one_line_errors(small_runs, tmp_path, capsys):
    workspace(small_runs, tmp_path)
    code, out, err = cli(capsys, "lb", "submissions/run-a.csv", "61.2")
    assert code == 2 and out == "" and err.count("\n") == 1 and "0..1" in err
    code, _, err = cli(capsys, "lb", "submissions/run-a.csv", "0.5", "--private", "nan")
    assert code == 2 and "--private" in err
    code, _, err = cli(capsys, "lb", "missing.csv", "0.5")
    assert code == 1 and err.strip() == "error: missing.csv: no such submission file"
    Path("runs/lb_scores.json").write_text("[1, 2")
    code, _, err = cli(capsys, "lb", "submissions/run-a.csv", "0.5")
    assert code == 1 and "runs/lb_scores.json" in err and "Traceback" not in err


def _record(args: tuple[str, float]) -> None:
    record_lb(Path(args[0]), args[1], None, Path("runs"))


def test_concurrent_writers_lose_no_record(tmp_path):
    files = []
    for i in range(12):
        path = tmp_path / f"s{i}.csv"
        path.write_text(f"image_id,PredictionString\nx.jpg,{i}\n")
        files.append((str(path), i / 100))
    with multiprocessing.get_context("fork").Pool(6) as pool:
        pool.map(_record, files)
    scores = read_lb(Path("runs"))
    assert sorted(r["public"] for r in scores.values()) == [i / 100 for i in range(12)]
