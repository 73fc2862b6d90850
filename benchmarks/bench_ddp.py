"""Data-parallel training against one process, on one fold through the CLI: seconds per epoch and the result.

    .venv/bin/python benchmarks/bench_ddp.py --data DIR [--model fcn32s] [--gpus 2] [--device cpu] [--epochs 3]
        [--image-size 64] [--batch-size 8] [--repeats 2]

Arms `--gpus 1` and `--gpus N` alternate `--repeats` times, each a fresh run of fold 0 of 2 with the same seed;
dropout and augmentation are off, so both arms train on the same global batches and should end at the same
losses (train/distributed.py). On a CPU the N processes share the cores (gloo): this measures the harness's
overhead and checks the result, not a speed-up; on N GPUs (NCCL) it is the scaling figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SAME = ["--set", "dropout=0", "--set", "aug_hflip=0", "--set", "aug_scale_min=1", "--set", "aug_scale_max=1",
        "--set", "aug_color=0", "--set", "weights=null", "--set", "overlays=0", "--set", "tracker=none",
        "--set", "val_every=1"]  # fmt: skip


def one_run(args: argparse.Namespace, gpus: int, runs: Path) -> dict:
    cmd = [sys.executable, "-m", "competition", "train", args.model, "--data", str(args.data), "--runs-dir",
           str(runs), "--folds", "2", "--fold", "0", "--epochs", str(args.epochs), "--image-size",
           str(args.image_size), "--batch-size", str(args.batch_size), "--device", args.device, "--gpus", str(gpus),
           "--json", *SAME]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"--gpus {gpus} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    history = pd.read_csv(Path(result["dir"]) / "fold_0" / "metrics.csv")
    return {"epoch_s": float(history["seconds"].iloc[1:].mean()), "loss": float(history["train_loss"].iloc[-1]),
            "miou": result["miou"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="fcn32s")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.data = args.data.resolve()
    rows: dict[int, list[dict]] = {1: [], args.gpus: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for gpus in rows:
                rows[gpus].append(one_run(args, gpus, Path(tmp) / f"{gpus}-{r}"))
    print(f"\n{args.model}, fold 0 of 2, {args.epochs} epochs, {args.image_size} px, global batch {args.batch_size}, "
          f"--device {args.device}, {args.repeats} repeats (seconds per epoch after the first: best)")  # fmt: skip
    print(f"{'processes':>9} {'s/epoch':>8} {'last train loss':>16} {'mIoU':>7}")
    for gpus, runs in rows.items():
        best = min(r["epoch_s"] for r in runs)
        print(f"{gpus:>9} {best:>8.2f} {statistics.mean(r['loss'] for r in runs):>16.6f} {runs[0]['miou']:>7.4f}")
    one, many = (min(r["epoch_s"] for r in rows[g]) for g in rows)
    print(f"{args.gpus} processes / 1: time per epoch x{many / one:.2f}")


if __name__ == "__main__":
    main()
