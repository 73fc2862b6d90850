"""Search with pruning vs without on the same budget of training epochs: best CV mIoU and epochs spent.

Runs `./run.sh search` twice through the CLI, each arm in its own runs folder and SQLite study, with the same
seed (so TPE's first random configurations are the same in both arms), the same space and the same
`--epoch-budget`: the `none` arm trains every trial to the end, the `median` arm stops poor trials early and
spends the epochs it saves on more trials. Both arms start with the model's default configuration (trial 0).
Prints a table: trials (complete / pruned), epochs spent, best CV mIoU, the trial that reached it, the
default's CV mIoU, and the ratios median / none.

    .venv/bin/python benchmarks/bench_pruning.py --data ../shared/data/trashcan-mini --out /tmp/bench-pruning \\
        [--model unet] [--budget 60] [--folds 2] [--epochs 3] [--image-size 48] [--space FILE] [--seed 11] \\
        [--set KEY=VALUE ...]

The arms run one after the other (both would share the CPU cores otherwise); each arm's log is in its folder.
A finished arm is not run again: re-running the command after an interruption resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_arm(args: argparse.Namespace, pruner: str) -> dict:
    out = args.out / pruner
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    cmd = [sys.executable, "-m", "competition", "search", args.model, "--data", str(args.data),
           "--runs-dir", str(out / "runs"), "--study", f"{args.model}-{pruner}", "--pruner", pruner,
           "--trials", str(args.max_trials), "--epoch-budget", str(args.budget), "--folds", str(args.folds),
           "--epochs", str(args.epochs), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--seed", str(args.seed), "--json"]  # fmt: skip
    cmd += ["--space", str(args.space)] if args.space else []
    for item in args.set:
        cmd += ["--set", item]
    start = time.perf_counter()
    with (out / "search.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode != 0:
        sys.exit(f"{pruner} arm failed (exit {proc.returncode}); see {out / 'search.log'}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    result["default_miou"] = default_value(result)
    result_file.write_text(json.dumps(result, indent=2))
    return result


def default_value(result: dict) -> float | None:
    """CV mIoU of trial 0 (the model's default configuration), read from the study's trials.csv."""
    import pandas as pd

    trials = pd.read_csv(Path(result["dir"]) / "trials.csv")
    row = trials[trials["number"] == 0]
    return None if row.empty or row["state"].iloc[0] != "COMPLETE" else float(row["value"].iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for both arms' runs, studies and logs")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--budget", type=int, default=60, help="training epochs per arm (all folds, all trials)")
    parser.add_argument("--max-trials", type=int, default=100, help="a cap that the budget should reach first")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--space", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()
    if args.space:
        args.space = args.space.resolve()

    arms = {pruner: run_arm(args, pruner) for pruner in ("none", "median")}
    print(f"\n{args.model} on {args.data.name}: {args.folds} folds x {args.epochs} epochs per trial, "
          f"{args.image_size} px, budget {args.budget} epochs per arm, seed {args.seed}")  # fmt: skip
    print(f"{'pruner':<8} {'trials':>6} {'complete':>8} {'pruned':>6} {'epochs':>6} {'best CV':>8} {'(trial)':>7} "
          f"{'default':>8} {'minutes':>7}")  # fmt: skip
    for pruner, r in arms.items():
        best = r["best"] or {}
        default = f"{r['default_miou']:.4f}" if r["default_miou"] is not None else "-"
        print(f"{pruner:<8} {r['trials']:>6} {r['complete']:>8} {r['pruned']:>6} {r['epochs']:>6} "
              f"{best.get('miou', float('nan')):>8.4f} {best.get('number', '-'):>7} {default:>8} "
              f"{r['seconds'] / 60:>7.1f}")  # fmt: skip
    none, median = arms["none"], arms["median"]
    if none["best"] and median["best"]:
        print(
            f"median / none: best CV mIoU x{median['best']['miou'] / none['best']['miou']:.3f}, "
            f"epochs x{median['epochs'] / none['epochs']:.3f}, trials x{median['trials'] / none['trials']:.2f}"
        )


if __name__ == "__main__":
    main()
