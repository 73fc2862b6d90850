"""The harness against a plain hand-written loop (benchmarks/peer_loop.py) at equal budget, side by side.

Every arm trains the same model (U-Net, EfficientNet-Lite0 encoder with the ImageNet weights of the pinned
package) for the same folds x epochs at the same image size, batch size and learning rate, predicts test.json
and is scored with `./run.sh score --gt` (test mIoU per image, the leaderboard's, and over the dataset). Each
arm x seed runs as its own process, timed end to end (imports, data, training, prediction, CSV). Arms:

- `plain`: peer_loop.py (random halves, OneCycle, hflip only, last epoch, no validation).
- `harness`: `./run.sh train` + `./run.sh predict` with the harness's defaults for everything but the budget.
- `harness:<name>`: the harness with one of ABLATIONS switched (a --set list), to find what a difference costs.
- `plain:<name>`: the plain loop with one of PLAIN_ABLATIONS (e.g. the harness's folds or scale augmentation).

    .venv/bin/python benchmarks/bench_peer.py --data ../shared/data/trashcan-mini \
        --gt ../shared/data/trashcan-mini-gt/test_gt.json --seeds 0 1 2 --out /tmp/peer
    .venv/bin/python benchmarks/bench_peer.py --data sample --seeds 0 1 2 --out /tmp/peer-sample
    .venv/bin/python benchmarks/bench_peer.py ... --arms plain harness harness:noaug harness:last
    .venv/bin/python benchmarks/bench_peer.py ... --profile   # where one harness fold's time goes (cProfile)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ENCODER = ["--set", "encoder=timm-tf_efficientnet_lite0", "--set", "encoder_weights=imagenet"]

# one harness difference from the plain loop at a time (settings for --set)
ABLATIONS: dict[str, list[str]] = {
    "noaug": ["aug_scale_min=1", "aug_scale_max=1", "aug_color=0"],  # hflip only, as the plain loop
    "noscale": ["aug_scale_min=1", "aug_scale_max=1"],
    "nocolor": ["aug_color=0"],
    "warmup": ["warmup_epochs=WARMUP"],  # OneCycle's 30 % of the run (WARMUP = 0.3 x epochs)
    "wd": ["weight_decay=1e-4"],
    "last": ["keep=last"],  # the last epoch's weights, not the best epoch's
    "workers0": ["num_workers=0"],
    "quiet": ["tracker=none", "overlays=0"],
    "val_last": ["val_every=0"],  # validate the last epoch only
    "plainlike": ["aug_scale_min=1", "aug_scale_max=1", "aug_color=0", "warmup_epochs=WARMUP", "keep=last"],
}
PLAIN_ABLATIONS: dict[str, list[str]] = {
    "harness_folds": ["--folds-from", "FOLDS"],  # the harness's stratified folds of this seed
    "scale": ["--scale-aug"],
}


def run(cmd: list[str], log: Path) -> tuple[str, float]:
    """Run a command (stdout kept, stderr to `log`); its last stdout line and its wall time."""
    start = time.time()
    with log.open("a") as err:
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_peer: {' '.join(cmd[:4])} ... failed (exit {done.returncode}); see {log}")
    lines = done.stdout.strip().splitlines()
    return (lines[-1] if lines else ""), time.time() - start


def score(csv: Path, gt: Path, data: Path, log: Path) -> dict:
    line, _ = run(["./run.sh", "score", str(csv), "--gt", str(gt), "--data", str(data), "--json"], log)
    return json.loads(line)


def harness_folds(data: Path, folds: int, seed: int, out: Path) -> Path:
    """The validation ids of the harness's folds for this seed, as peer_loop's --folds-from reads them."""
    sys.path.insert(0, str(ROOT))
    from competition.data import DataRoot, make_folds

    f = make_folds(DataRoot(data), "kfold", folds, seed)
    path = out / f"folds-{seed}.json"
    path.write_text(json.dumps([list(v) for v in f.val_ids]))
    return path


def warm_caches(args) -> None:
    """The harness's mask and image caches built before anything is timed (a user pays that once per data set
    and image size, not per run); the plain loop decodes in every run, as such loops do."""
    sys.path.insert(0, str(ROOT))
    from competition.core.config import resolve
    from competition.train.setup import prepare

    flags = {"data": str(args.data), "image_size": args.image_size, "folds": args.folds}
    prepare(resolve(flags=flags), args.out / "runs", log=lambda *a, **k: None)


def run_arm(arm: str, seed: int, args, out: Path) -> dict:
    log = out / f"{arm.replace(':', '-')}-{seed}.log"
    budget = {"epochs": args.epochs, "image_size": args.image_size, "batch_size": args.batch_size}
    warmup = f"{0.3 * args.epochs:g}"
    if arm.startswith("plain"):
        csv = out / f"{arm.replace(':', '-')}-{seed}.csv"
        cmd = [PYTHON, "benchmarks/peer_loop.py", "--data", str(args.data), "--out", str(csv), "--seed", str(seed)]
        cmd += ["--folds", str(args.folds), "--epochs", str(args.epochs), "--image-size", str(args.image_size)]
        cmd += ["--batch-size", str(args.batch_size), "--lr", str(args.lr)]
        if ":" in arm:
            extra = PLAIN_ABLATIONS[arm.split(":", 1)[1]]
            cmd += [str(harness_folds(args.data, args.folds, seed, out)) if a == "FOLDS" else a for a in extra]
        _, seconds = run(cmd, log)
        timing = {"train": seconds, "predict": 0.0}
    else:
        runs = out / "runs"
        cmd = ["./run.sh", "train", "unet", "--data", str(args.data), "--folds", str(args.folds)]
        cmd += ["--epochs", str(args.epochs), "--image-size", str(args.image_size), "--seed", str(seed)]
        cmd += ["--batch-size", str(args.batch_size), "--runs-dir", str(runs), "--set", f"lr={args.lr}", *ENCODER]
        if ":" in arm:
            for setting in ABLATIONS[arm.split(":", 1)[1]]:
                cmd += ["--set", setting.replace("WARMUP", warmup)]
        cmd += ["--json"]
        line, train_s = run(cmd, log)
        trained = json.loads(line)
        line, predict_s = run(["./run.sh", "predict", trained["dir"], "--runs-dir", str(runs), "--json"], log)
        made = Path(json.loads(line)["csv"])
        csv = out / f"{arm.replace(':', '-')}-{seed}.csv"
        made.replace(csv)  # out of the project's submissions/
        made.with_suffix(".json").unlink(missing_ok=True)
        timing = {"train": train_s, "predict": predict_s, "cv": trained["miou"]}
    scores = score(csv, args.gt, args.data, log)
    row = {"arm": arm, "seed": seed, **budget, **timing, "wall": timing["train"] + timing["predict"]}
    row |= {"test_image": scores["miou_image"], "test_dataset": scores["miou_dataset"]}
    print(json.dumps(row), flush=True)
    return row


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def summary(rows: list[dict]) -> None:
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    plain = [r["wall"] for r in rows if r["arm"] == "plain"]
    print("\n| arm | seeds | test mIoU (image) | test mIoU (dataset) | CV (kept epochs) | wall s | x plain |")
    print("|---|---|---|---|---|---|---|")
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        wall = statistics.mean(r["wall"] for r in mine)
        cv = [r["cv"] for r in mine if "cv" in r]
        ratio = f"{wall / statistics.mean(plain):.2f}" if plain else "-"
        print(
            f"| {arm} | {len(mine)} | {spread([r['test_image'] for r in mine])} | "
            f"{spread([r['test_dataset'] for r in mine])} | {spread(cv) if cv else '-'} | {wall:.0f} | {ratio} |"
        )


def profile(args, out: Path) -> None:
    """cProfile of one harness fold (train + its validations + out-of-fold writing): where the time goes."""
    import cProfile
    import pstats

    stats = out / "harness.prof"
    cmd = [PYTHON, "-m", "cProfile", "-o", str(stats), "-m", "competition", "train", "unet", "--data", str(args.data)]
    cmd += ["--folds", str(args.folds), "--fold", "0", "--epochs", str(args.epochs), "--runs-dir", str(out / "prof")]
    cmd += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--set", f"lr={args.lr}"]
    run([*cmd, *ENCODER], out / "profile.log")
    del cProfile
    p = pstats.Stats(str(stats))
    wanted = {
        "prepare": "train/setup.py:prepare", "build_model": "train/setup.py:build_model",
        "train_epoch": "train/fold.py:train_epoch", "evaluate (per-epoch + final)": "train/evaluate.py:evaluate",
        "  forward at validation": "predict/inference.py:predict_probs", "  overlays": "train/plots.py:save_overlays",
        "  out-of-fold writing": "predict/probs.py:write", "save_checkpoint": "core/checkpoint.py:save_checkpoint",
        "trackers (epoch)": "train/trackers.py:epoch", "summarize_run": "train/summary.py:summarize_run",
        "DataLoader __iter__": "dataloader.py:__iter__",
    }  # fmt: skip
    total = max(v[3] for v in p.stats.values())
    print(f"\nprofile of one harness fold ({args.epochs} epochs, {args.image_size}px): {total:.1f}s in all")
    print("| part | cumulative s | share |\n|---|---|---|")
    for label, suffix in wanted.items():
        file_part, func = suffix.rsplit(":", 1)
        cum = sum(v[3] for (f, _, name), v in p.stats.items() if name == func and f.endswith(file_part))
        print(f"| {label} | {cum:.1f} | {100 * cum / total:.0f}% |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset root, or `sample` (the embedded sample dataset)")
    p.add_argument("--gt", type=Path, help="test ground truth (default: DATA/test_gt.json, as the sample has)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--arms", nargs="*", default=["plain", "harness"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--profile", action="store_true", help="also profile one harness fold")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data == "sample":
        args.data = args.out / "sample"
        if not (args.data / "train_all.json").exists():
            run(["./run.sh", "sample-data", str(args.data)], args.out / "sample.log")
    args.data = Path(args.data).resolve()
    args.gt = (args.gt or args.data / "test_gt.json").resolve()
    for a in args.arms:
        kind, _, name = a.partition(":")
        known = ABLATIONS if kind == "harness" else PLAIN_ABLATIONS
        if kind not in ("plain", "harness") or (name and name not in known):
            choices = f"plain, harness, harness:{'|'.join(ABLATIONS)}, plain:{'|'.join(PLAIN_ABLATIONS)}"
            p.error(f"unknown arm {a!r}: {choices}")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    warm_caches(args)
    rows = []
    for seed in args.seeds:  # seed-major: an interrupted benchmark still has every arm of the first seeds
        for arm in args.arms:
            rows.append(run_arm(arm, seed, args, args.out))
    if rows:
        (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
        summary(rows)
    if args.profile:
        profile(args, args.out)


if __name__ == "__main__":
    main()
