"""Post-processing (`--post auto`) measured: out-of-fold held-out gains of each step and their gains on a test
set with ground truth, with per-class IoU before and after.

For each run given: `predict RUN --post auto` (fits the steps on the run's out-of-fold probabilities, writes
postprocess.json and the run's test probabilities), then, on the stored test probabilities, these decisions:
the plain argmax; + calibration (the offsets fitted on every out-of-fold image, applied whether kept or not);
+ CRF (the candidate best out of fold, on the calibration the fit kept, applied whether kept or not; and every
other candidate, to see whether the out-of-fold choice is the test's); + cleanup (the minimum areas fitted on
the decision the fit kept, applied whether kept or not). Each is scored
against the test ground truth image by image; gains are paired differences with their jackknife standard error
over test images (ensemble.noise.gain), for the per-image and the dataset mIoU. The final decision (the steps
that survived) is also written as a CSV and scored through `score --gt`, which must agree.

    .venv/bin/python benchmarks/bench_post.py --runs-dir RUNS RUN [RUN ...] --gt TEST_GT.json [--data ROOT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from competition.core.config import resolve  # noqa: E402
from competition.core.geometry import resize_nearest  # noqa: E402
from competition.core.runs import find_run, read_config  # noqa: E402
from competition.data import DataRoot, load_coco, mask_store  # noqa: E402
from competition.ensemble.noise import gain, metric_value  # noqa: E402
from competition.ensemble.postfit import class_iou  # noqa: E402
from competition.predict import (  # noqa: E402
    CRF_GRID,
    Decision,
    crf_available,
    grid_images,
    parse_crf,
    read_decision,
    read_probs,
    run_classes,
)
from competition.submit import per_image_confusion, score_submission  # noqa: E402


def test_confusions(run_dir: Path, decisions: dict[str, Decision], gt: Path, data: str | None) -> dict[str, np.ndarray]:
    """Per-image test confusion [n, C, C] of each decision (the run's class table, its test probabilities)."""
    cfg = read_config(run_dir)
    root = DataRoot(Path(data or cfg["data"]), check_images=False)
    classes = run_classes(run_dir, cfg, root)
    truth = load_coco(gt)
    masks = mask_store(truth, classes, cfg["overlap"], log=lambda m: None)
    by_name = {im.file_name: im for im in truth.images}
    stored = read_probs(run_dir / "test" / "probs.npy")
    target = torch.from_numpy(np.stack([resize_nearest(masks[by_name[n].id]) for n in stored.images]).astype(np.int64))
    probs = stored.probabilities()
    pixels = grid_images(root, "test")(stored.images) if any(d.needs_images for d in decisions.values()) else None
    out = {}
    for name, decision in decisions.items():
        start = time.time()
        pred = torch.from_numpy(decision.masks(probs, pixels if decision.needs_images else None).astype(np.int64))
        if decision.needs_images:
            print(f"  {name}: {time.time() - start:.1f} s for {len(probs)} test images (CRF in processes)")
        out[name] = per_image_confusion(pred, target, classes.num_classes, classes.ignore_index).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--data")
    args = parser.parse_args()
    for ref in args.runs:
        run_dir = find_run(args.runs_dir, ref)
        name = f"{run_dir.name}-post"
        cmd = [sys.executable, "-m", "competition", "predict", str(run_dir), "--runs-dir", str(args.runs_dir),
               "--post", "auto", "--name", name, "--json"] + (["--data", args.data] if args.data else [])  # fmt: skip
        proc = subprocess.run(cmd, cwd=Path.cwd(), capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"predict --post auto failed: {proc.stderr.strip().splitlines()[-1:]}")
        print("\n".join(line for line in proc.stderr.splitlines() if "held" in line or "post-processing" in line))
        csv = json.loads(proc.stdout.strip().splitlines()[-1])["csv"]
        cfg = read_config(run_dir)
        names = read_probs(run_dir / "test" / "probs.npy").classes
        final = read_decision(run_dir / "postprocess.json", names)
        report = final.report
        calibrated = Decision(tuple(names), tuple(report["calibration"]["fitted"]))
        calibration = tuple(report["calibration"]["fitted"]) if report["calibration"]["kept"] else None
        base_offsets = final.offsets  # the calibration the final decision applies (None if none)
        cleaned = Decision(tuple(names), base_offsets, tuple(report["cleanup"]["fitted"]), crf=final.crf)
        decisions = {"argmax": Decision(tuple(names)), "+calibration": calibrated,
                     "base+cleanup": cleaned, "final": final}  # fmt: skip
        crf_fit = report.get("crf", {})
        bases = {"the decision so far": calibration, "the plain argmax": None}
        if crf_available() and "fitted" in crf_fit:
            fitted = parse_crf(crf_fit["fitted"])
            decisions["base+crf"] = Decision(tuple(names), bases[crf_fit["fitted_on"]], crf=fitted)
            decisions["argmax+crf"] = Decision(tuple(names), None, crf=fitted)
            for b, on in enumerate(crf_fit["bases"]):
                for i, params in enumerate(CRF_GRID):
                    decisions[f"crf#{b}.{i}"] = Decision(tuple(names), bases[on], crf=params)
        cms = test_confusions(run_dir, decisions, args.gt, args.data)
        metric = cfg["metric"]
        print(f"\n{run_dir.name} ({cfg['model']}, ranking metric {metric}); out of fold, held out "
              f"({report['images']} images): {report['before']:.4f} -> {report['after']:.4f}")  # fmt: skip
        print(f"{'step':<13} {'OOF gain ± SE':>17} {'kept':>5} {'test image mIoU':>16} {'gain ± SE':>17} "
              f"{'test dataset mIoU':>18} {'gain ± SE':>17}")  # fmt: skip
        base_name = "+calibration" if report["calibration"]["kept"] else "argmax"
        rows = [("calibration", "+calibration", "argmax")]
        if "base+crf" in cms:
            rows.append(("crf", "base+crf", base_name))
        rows.append(("cleanup", "base+cleanup", "final-before-cleanup"))
        cms["final-before-cleanup"] = cms["base+crf"] if final.crf is not None else cms[base_name]
        for step, name_, against in rows:
            r = report[step]
            gi, gd = gain(cms[name_], cms[against], "image"), gain(cms[name_], cms[against], "dataset")
            print(f"{step:<13} {r['gain']:>+9.4f} ± {r['se']:.4f} {str(r['kept']):>5} "
                  f"{metric_value(cms[name_], 'image'):>16.4f} {str(gi):>17} "
                  f"{metric_value(cms[name_], 'dataset'):>18.4f} {str(gd):>17}")  # fmt: skip
        gi, gd = gain(cms["final"], cms["argmax"], "image"), gain(cms["final"], cms["argmax"], "dataset")
        print(f"{'final':<13} {'':>17} {'':>5} {metric_value(cms['final'], 'image'):>16.4f} {str(gi):>17} "
              f"{metric_value(cms['final'], 'dataset'):>18.4f} {str(gd):>17}   ({final.describe()})")  # fmt: skip
        print(f"{'argmax':<13} {'':>17} {'':>5} {metric_value(cms['argmax'], 'image'):>16.4f} {'':>17} "
              f"{metric_value(cms['argmax'], 'dataset'):>18.4f}")  # fmt: skip
        scores, _ = score_submission(Path(csv), args.gt, args.data or cfg["data"], resolve(), log=lambda m: None)
        assert abs(scores.miou_image - metric_value(cms["final"], "image")) < 1e-9, "score --gt disagrees"
        print(f"score --gt of {csv}: image {scores.miou_image:.4f}, dataset {scores.miou_dataset:.4f} (agrees)")
        if "base+crf" in cms:
            print(f"\nCRF options ({crf_fit['images']} out-of-fold images; test gain over {base_name}):")
            for b, on in enumerate(crf_fit["bases"]):
                for i, params in enumerate(CRF_GRID):
                    g = gain(cms[f"crf#{b}.{i}"], cms[base_name], metric)
                    print(f"  {params.describe():<40} on {on:<20} OOF {crf_fit['grid_miou'][b][i]:.4f}  "
                          f"test {str(g):>17}")  # fmt: skip
            gi, gd = gain(cms["argmax+crf"], cms["argmax"], "image"), gain(cms["argmax+crf"], cms["argmax"], "dataset")
            print(f"the fitted CRF on the plain argmax, test gain over the argmax: image {gi}, dataset {gd}")
        oof = report["calibration"]
        before_test, after_test = class_iou(cms["argmax"]), class_iou(cms["final"])
        print(f"\n{'class':<24} {'OOF before':>10} {'OOF after':>10} {'test before':>11} {'test after':>10}")
        kept = [step for step in ("calibration", "crf", "cleanup") if report.get(step, {}).get("kept")]
        after_oof = report[kept[-1]]["per_class_after"] if kept else oof["per_class_before"]  # (CRF's: its images)
        for i, cls in enumerate(names):
            cells = [oof["per_class_before"][i], after_oof[i], before_test[i], after_test[i]]
            print(f"{cls:<24} " + " ".join("       n/a" if v is None else f"{v:>10.4f}" for v in cells))


if __name__ == "__main__":
    main()
