"""Seconds a command takes from a new process to its answer, for the quick commands (leaderboard, check, score, lb,
models, data-info, report), and which heavy packages it imported; this checkout beside another revision.

    .venv/bin/python benchmarks/bench_cli.py [--against REV] [--repeats 5]

Both arms run on the same small files (the sample dataset, its sample submission, an empty runs folder), with
the same interpreter, alternating command by command; `--against REV` checks REV out in a temporary git worktree
and puts it first on PYTHONPATH. The table gives each arm's mean and standard deviation per command and the
packages among torch, torchvision, SMP, timm, matplotlib, Optuna and pandas that the command imported.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "segmentation_models_pytorch", "timm", "matplotlib", "optuna", "pandas")
# Runs the command as `python -m competition` does, then names the heavy packages it left imported.
PROBE = f"""import runpy, sys
sys.argv = ["competition", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("competition", run_name="__main__")
except SystemExit as e:
    code = e.code
print("imported:", *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
sys.exit(code)
"""


def heavy_imports(argv: list[str], cwd: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Runs `competition ARGV` in a new interpreter; returns the process and the HEAVY packages it imported."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    return done, done.stderr.rsplit("imported:", 1)[-1].split() if "imported:" in done.stderr else []


def background_csv(sample: Path, out: Path) -> Path:
    """A valid submission: every test image of the sample, all background."""
    with (sample / "sample_submission.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    zeros = " ".join(["0"] * 256 * 256)
    with out.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], *([row[0], zeros] for row in rows[1:])])
    return out


def commands(work: Path) -> dict[str, list[str]]:
    sample, runs = work / "sample", work / "runs"
    submission = background_csv(sample, work / "background.csv")
    return {
        "--help": ["--help"],
        "leaderboard": ["leaderboard", "--runs-dir", str(runs)],
        "check": ["check", str(submission), "--data", str(sample)],
        "score": ["score", str(submission), "--gt", str(sample / "test_gt.json"), "--data", str(sample)],
        "lb": ["lb", str(submission), "0.5", "--runs-dir", str(runs)],
        "models": ["models"],
        "data-info": ["data-info", "--data", str(sample)],
        "report": ["report", "--runs-dir", str(runs), "--out", str(work / "report.html")],
    }


def one(source: Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(source), "COMPETITION_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "competition", *argv], cwd=source, env=env, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"bench_cli: {' '.join(argv)} failed in {source}:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def heavy_of(source: Path, argv: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(source), "COMPETITION_OFFLINE": "1"}
    done, heavy = heavy_imports(argv, source, env)
    if done.returncode != 0:
        sys.exit(f"bench_cli: {' '.join(argv)} failed in {source}:\n{done.stderr[-2000:]}")
    return " ".join(heavy) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="a git revision to run beside this checkout")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats: at least 2 (the table gives a standard deviation)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        arms = {"this checkout": ROOT}
        if args.against:
            tree = work / "against"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), args.against],
                           check=True)  # fmt: skip
            arms[args.against] = tree
        try:
            subprocess.run([sys.executable, "-m", "competition", "sample-data", str(work / "sample")], cwd=ROOT,
                           check=True, capture_output=True)  # fmt: skip
            (work / "runs").mkdir()
            cases = commands(work)
            seen = {(arm, name): [] for arm in arms for name in cases}
            # which heavy packages each command imports (this also warms the file cache)
            heavy = {
                (arm, name): heavy_of(source, argv) for arm, source in arms.items() for name, argv in cases.items()
            }
            for r in range(args.repeats):
                for name, argv in cases.items():
                    for arm, source in arms.items():
                        seen[arm, name].append(one(source, argv))
                print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "against")])
                shutil.rmtree(work / "against", ignore_errors=True)
    names = list(arms)
    print(f"\nseconds from a new process to the answer, {args.repeats} alternating repeats (mean +- sd)\n")
    print("| command | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |") + " imported |")
    print("|---|" + "---|" * len(names) + ("---|" if len(names) == 2 else "") + "---|")
    for name in cases:
        cells = [f"{statistics.mean(seen[a, name]):.2f} +- {statistics.stdev(seen[a, name]):.2f}" for a in names]
        if len(names) == 2:
            cells.append(f"{statistics.mean(seen[names[1], name]) / statistics.mean(seen[names[0], name]):.2f}x")
        imported = " / ".join(heavy[a, name] for a in names)
        print(f"| {name} | " + " | ".join(cells) + f" | {imported} |")
    if len(names) == 2:
        print(f"\nratio: {names[1]} / {names[0]}; imported: {' / '.join(names)}")


if __name__ == "__main__":
    main()
