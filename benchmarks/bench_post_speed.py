"""How long `--post auto` takes to fit on a competition-sized out-of-fold set (default 3,000 images at the
256 x 256 grid, 12 classes), step by step: calibration alone, + cleanup, + dense CRF.

No training: the embedded sample generator writes N training images (and their COCO file), and a run folder
gets one out-of-fold file of synthetic probabilities (uint8, as the harness stores them: the truth with
per-class confusions and noise, so the fit has something to do). Then ensemble.postfit.fit_post runs on it,
timed, for each set of steps. The probability file is N x 12 x 64 KiB (2.4 GB for 3,000 images): the passes
read it from the page cache.

    .venv/bin/python benchmarks/bench_post_speed.py [--images 3000] [--steps calibration cleanup crf]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from competition.core.config import resolve  # noqa: E402
from competition.core.fileio import write_json  # noqa: E402
from competition.core.geometry import resize_nearest  # noqa: E402
from competition.core.runs import write_config  # noqa: E402
from competition.data import DataRoot, write_sample_dataset  # noqa: E402
from competition.ensemble import Member  # noqa: E402
from competition.ensemble.postfit import fit_post  # noqa: E402
from competition.predict import BLOCK, crf_available, write_probs  # noqa: E402


def synthetic_run(base: Path, n: int) -> tuple[Member, DataRoot]:
    """A run folder over a sample dataset of n training images, with synthetic out-of-fold probabilities."""
    root = DataRoot(write_sample_dataset(base / "data", n_train=n, n_test=4, size=96))
    cfg = resolve(models.get_spec("unet").defaults, flags={"folds": 2})
    cfg.update(model="unet", data=str(root.root))
    classes = root.classes(cfg["classes"], cfg["ignore_index"])
    run = base / "runs" / "synthetic"
    (run / "fold_0").mkdir(parents=True)
    write_config(run, cfg)
    write_json(run / "run.json", {"status": "complete", "classes": list(classes.names), "folds": [0]})
    coco = root.coco("train_all")
    masks = root.masks("train_all", classes, cfg["overlap"])
    rng = np.random.default_rng(0)
    c = classes.num_classes
    confuse = rng.permutation(c)  # each class's probability mass partly goes to another class
    writer = write_probs(run / "fold_0" / "oof.npy", [im.file_name for im in coco.images], list(classes.names))
    for start in range(0, n, BLOCK):
        chunk = coco.images[start : start + BLOCK]
        truth = np.stack([resize_nearest(masks[im.id]) for im in chunk]).astype(np.int64)
        truth[truth == classes.ignore_index] = 0
        onehot = np.eye(c, dtype=np.float32)[truth].transpose(0, 3, 1, 2)
        noise = rng.random((len(chunk), c, 256, 256), dtype=np.float32) ** 2
        probs = 0.4 * onehot + 0.3 * onehot[:, confuse] + 0.3 * noise
        writer.write(probs / probs.sum(1, keepdims=True))
    writer.close()
    return Member(run, cfg), root


def main(argv: list[str] | None = None) -> int:
    from bench_data import machine_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--steps", nargs="+", default=["calibration", "cleanup", "crf"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COMPETITION_CACHE"] = str(Path(tmp) / "cache")
        print("\n".join(machine_info()))
        start = time.perf_counter()
        member, root = synthetic_run(Path(tmp), args.images)
        print(f"synthetic run: {args.images} out-of-fold images written in {time.perf_counter() - start:.0f} s\n")
        classes = root.classes(member.cfg["classes"], member.cfg["ignore_index"])
        rows = []
        for k in range(1, len(args.steps) + 1):
            steps = tuple(args.steps[:k])
            if "crf" in steps and not crf_available():
                rows.append((steps, None, "pydensecrf2 not installed"))
                continue
            start = time.perf_counter()
            decision = fit_post([member], np.ones(1), root, classes, lambda m: print("  " + m), steps)
            rows.append((steps, time.perf_counter() - start, decision.describe()[:70]))
        print(f"\n{'steps':<28} {'seconds':>8} {'ms/image':>9}  decision")
        for steps, seconds, what in rows:
            if seconds is None:
                print(f"{','.join(steps):<28} {'n/a':>8} {'':>9}  {what}")
            else:
                print(f"{','.join(steps):<28} {seconds:>8.1f} {seconds / args.images * 1000:>9.1f}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
