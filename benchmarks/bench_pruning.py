"""Pruners at the same budget of training epochs: how soon each reaches the unpruned search's best CV mIoU.

Runs `search` through the CLI once per arm (pruner) and sampler seed, each in its own runs folder and SQLite
study, with the same space, folds, epochs and `--epoch-budget`. Arms: none / median / wilcoxon / hyperband.
Every arm starts with the model's default configuration (trial 0). Per arm it prints, with the spread over the
sampler seeds:
- epochs until the unpruned arm's best CV is first reached (by a fully trained trial; "within its fold noise":
  at least that best minus its standard error over folds, std / sqrt(folds)), `-` if never within the budget;
- the best fully trained trial's CV mIoU at the budget, with its fold std;
- trials run, pruned, epochs spent;
- with --check-pruned N: N pruned trials per arm re-trained in full, and how many of them score above the
  median of the unpruned arm's complete trials (pruned wrongly).

    .venv/bin/python benchmarks/bench_pruning.py --data ../shared/data/trashcan-mini --out /tmp/bench-pruning \\
        [--model unet] [--budget 120] [--folds 5] [--epochs 3] [--image-size 48] [--seeds 0 1] \\
        [--arms none median wilcoxon hyperband] [--space FILE] [--check-pruned 2] [--set KEY=VALUE ...]

Arms run one after the other, seed by seed (they would share the CPU cores otherwise); each arm's log is in its folder.
A finished arm is not run again: re-running the command after an interruption resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def search_cmd(args: argparse.Namespace, runs: Path, study: str, pruner: str, seed: int, trials: int) -> list[str]:
    cmd = [sys.executable, "-m", "competition", "search", args.model, "--data", str(args.data),
           "--runs-dir", str(runs), "--study", study, "--pruner", pruner, "--sampler", args.sampler,
           "--sampler-seed", str(seed), "--trials", str(trials), "--folds", str(args.folds),
           "--epochs", str(args.epochs), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--seed", str(args.run_seed), "--no-predict", "--json"]  # fmt: skip
    cmd += ["--space", str(args.space)] if args.space else []
    for item in args.set:
        cmd += ["--set", item]
    return cmd


def run_arm(args: argparse.Namespace, pruner: str, seed: int) -> dict:
    out = args.out / f"{pruner}-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    result_file = out / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    cmd = search_cmd(args, out / "runs", "bench", pruner, seed, args.max_trials)
    cmd += ["--epoch-budget", str(args.budget)]
    start = time.perf_counter()
    with (out / "search.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode != 0:
        sys.exit(f"{pruner} arm (seed {seed}) failed (exit {proc.returncode}); see {out / 'search.log'}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    result["trace"] = trace(out / "runs", "bench")
    result_file.write_text(json.dumps(result, indent=2))
    return result


def trace(runs: Path, study_name: str) -> list[dict]:
    """The study's trials in the order they finished: epochs spent up to then, value, fold std, pruned or not."""
    import optuna

    from competition.search import is_full
    from competition.search.trials import epochs_trained

    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{runs / 'optuna.db'}")
    done = sorted((t for t in study.trials if t.datetime_complete), key=lambda t: t.datetime_complete)
    rows, spent = [], 0
    for t in done:
        spent += epochs_trained(t)
        folds = [float(v) for v in (t.user_attrs.get("fold_scores") or {}).values()]
        rows.append({"number": t.number, "epochs": spent, "value": t.value, "full": is_full(t),
                     "fold_std": statistics.pstdev(folds) if len(folds) > 1 else 0.0,
                     "params": t.params or t.user_attrs.get("params", {})})  # fmt: skip
    return rows


def first_reach(rows: list[dict], target: float) -> int | None:
    """Epochs spent when a fully trained trial first scores at least `target`."""
    return next((r["epochs"] for r in rows if r["full"] and r["value"] >= target), None)


def best_full(rows: list[dict]) -> dict | None:
    full = [r for r in rows if r["full"]]
    return max(full, key=lambda r: r["value"]) if full else None


def check_pruned(args: argparse.Namespace, pruner: str, seed: int, rows: list[dict], n: int) -> list[float]:
    """Re-train up to `n` pruned trials of an arm in full (their params fixed, one trial each): their CV."""
    values = []
    for r in [r for r in rows if not r["full"]][:n]:
        out = args.out / f"check-{pruner}-s{seed}-t{r['number']}"
        result_file = out / "result.json"
        if not result_file.exists():
            out.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "competition", "train", args.model, "--data", str(args.data),
                   "--runs-dir", str(out / "runs"), "--folds", str(args.folds), "--epochs", str(args.epochs),
                   "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                   "--seed", str(args.run_seed), "--json"]  # fmt: skip
            for key, value in {**dict(s.split("=", 1) for s in args.set), **r["params"]}.items():
                cmd += ["--set", f"{key}={value}"]
            with (out / "train.log").open("w") as log:
                proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
            if proc.returncode != 0:
                sys.exit(f"re-training pruned trial {r['number']} failed; see {out / 'train.log'}")
            result_file.write_text(proc.stdout.strip().splitlines()[-1])
        values.append(float(json.loads(result_file.read_text())["miou"]))
    return values


def spread(values: list[float | None], fmt: str = "{:.4f}") -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    text = fmt.format(statistics.mean(known)) + (f" ± {fmt.format(statistics.pstdev(known))}" if len(known) > 1 else "")
    return text + (f" ({len(values) - len(known)} never)" if len(known) < len(values) else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for every arm's runs, studies and logs")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--arms", nargs="+", default=["none", "median", "wilcoxon", "hyperband"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="sampler seeds (one search each)")
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--budget", type=int, default=120, help="training epochs per search (all folds, all trials)")
    parser.add_argument("--max-trials", type=int, default=200, help="a cap that the budget should reach first")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--run-seed", type=int, default=42, help="--seed of the runs (folds, initialisation)")
    parser.add_argument("--space", type=Path)
    parser.add_argument("--check-pruned", type=int, default=0, metavar="N")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()
    args.space = args.space.resolve() if args.space else None

    # seed by seed, so an interrupted benchmark has whole seeds to show (and resumes where it stopped)
    results = {(arm, seed): run_arm(args, arm, seed) for seed in args.seeds for arm in args.arms}
    print(f"\n{args.model} on {args.data.name}: {args.folds} folds x {args.epochs} epochs per trial, "
          f"{args.image_size} px, budget {args.budget} epochs per search, sampler {args.sampler}, "
          f"seeds {args.seeds}")  # fmt: skip
    targets = {}
    for seed in args.seeds:  # the unpruned search's best, less its standard error over folds
        best = best_full(results[("none", seed)]["trace"]) if "none" in args.arms else None
        targets[seed] = best["value"] - best["fold_std"] / math.sqrt(args.folds) if best else None
    print(f"{'pruner':<10} {'epochs to none best':>20} {'best CV at budget':>18} {'fold std':>8} {'trials':>7} "
          f"{'pruned':>7} {'epochs':>7} {'minutes':>8}"
          + ("  pruned wrongly" if args.check_pruned else ""))  # fmt: skip
    unpruned_median = None
    if "none" in args.arms:
        complete = [r["value"] for s in args.seeds for r in results[("none", s)]["trace"] if r["full"]]
        unpruned_median = statistics.median(complete) if complete else None
    for arm in args.arms:
        arm_results = [results[(arm, s)] for s in args.seeds]
        reach = [first_reach(results[(arm, s)]["trace"], targets[s]) if targets[s] else None for s in args.seeds]
        bests = [best_full(r["trace"]) for r in arm_results]
        line = (f"{arm:<10} {spread(reach, '{:.0f}'):>20} {spread([b['value'] if b else None for b in bests]):>18} "
                f"{spread([b['fold_std'] if b else None for b in bests]):>8} "
                f"{spread([float(r['trials']) for r in arm_results], '{:.0f}'):>7} "
                f"{spread([float(r['pruned']) for r in arm_results], '{:.0f}'):>7} "
                f"{spread([float(r['epochs']) for r in arm_results], '{:.0f}'):>7} "
                f"{spread([r['seconds'] / 60 for r in arm_results], '{:.1f}'):>8}")  # fmt: skip
        if args.check_pruned and arm != "none" and unpruned_median is not None:
            checked = [v for s in args.seeds for v in check_pruned(args, arm, s, results[(arm, s)]["trace"],
                                                                   args.check_pruned)]  # fmt: skip
            wrong = sum(v > unpruned_median for v in checked)
            line += f"  {wrong} of {len(checked)} (median of unpruned complete trials {unpruned_median:.4f})"
        print(line)
    for seed in args.seeds:
        if targets[seed] is not None:
            print(f"seed {seed}: target {targets[seed]:.4f} (unpruned best less its fold standard error)")


if __name__ == "__main__":
    main()
