"""`./run.sh COMMAND ...`: the command-line contract of ../shared/CLI.md.

Exit codes: 0 success; 1 a user error (one line naming the file and the record); 2 usage error.
With --json the last line of stdout is one JSON object and human output goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from competition.errors import UserError

Log = Callable[[str], None]


def _logger(args: argparse.Namespace) -> Log:
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=stream, flush=True)

    return log


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


# --------------------------------------------------------------------------- commands


def cmd_sample_data(args: argparse.Namespace) -> int:
    from competition.sample_data import write_sample_dataset

    root = write_sample_dataset(Path(args.dir), seed=args.seed)
    print(f"sample dataset written to {root}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    import numpy as np

    from competition.config import resolve
    from competition.data import DataRoot, resolve_data_root
    from competition.folds import make_folds

    log = _logger(args)
    cfg = resolve(config_file=args.config, sets=args.set, flags={"folds": args.folds, "seed": args.seed})
    data = DataRoot(resolve_data_root(args.data, log))
    splits = [s for s in ("train_all", "train", "val", "test") if data.has(s)]
    for split in splits:
        coco = data.coco(split)
        n_ann = sum(len(a) for a in coco.annotations.values())
        log(f"{split + '.json':<15} {len(coco.images):>6} images {n_ann:>7} annotations (files checked)")
    classes = data.classes(cfg["classes"], cfg["ignore_index"])
    store = data.masks("train_all", classes, cfg["overlap"], log=log)
    counts = np.zeros(256, dtype=np.int64)
    present = np.zeros(256, dtype=np.int64)
    for image_id in data.coco("train_all").image_ids:
        c = np.bincount(store[image_id].ravel(), minlength=256)
        counts += c
        present += c > 0
    total = counts.sum()
    log(f"{'value':>5}  {'class':<24} {'pixels':>8} {'images':>7}")
    for value, name in enumerate(classes.names):
        log(f"{value:>5}  {name:<24} {counts[value] / total:>8.2%} {present[value]:>7}")
    if counts[classes.ignore_index]:
        log(f"{classes.ignore_index:>5}  {'(ignored)':<24} {counts[classes.ignore_index] / total:>8.2%}")
    folds = make_folds(data, cfg["split"], cfg["folds"], cfg["seed"])
    sizes = ", ".join(str(len(v)) for v in folds.val_ids)
    log(f"folds: {folds.k} ({folds.method}; validation sizes {sizes}){f' -> {folds.path}' if folds.path else ''}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from competition.data import DataRoot, resolve_data_root
    from competition.submission import check_submission

    log = _logger(args)
    data = DataRoot(resolve_data_root(args.data, log=lambda m: print(m, file=sys.stderr)), check_images=False)
    test = data.coco("test")
    problems = check_submission(Path(args.csv), [im.file_name for im in test.images], data.classes().num_classes)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 1
    log(f"{args.csv}: valid ({len(test.images)} rows, {data.classes().num_classes} classes)")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from competition.config import resolve
    from competition.scoring import score_submission

    log = _logger(args)
    cfg = resolve(sets=args.set, flags={"overlap": args.overlap})
    scores, classes = score_submission(Path(args.csv), Path(args.gt), args.data, cfg, log)
    if args.json:
        _emit_json(scores.to_dict())
        return 0
    log(f"per-image mIoU (run A leaderboard): {scores.miou_image:.4f}")
    log(f"dataset mIoU:                       {scores.miou_dataset:.4f}")
    log(f"pixel accuracy:                     {scores.pixel_accuracy:.4f}")
    for name, iou in zip(classes.names, scores.per_class, strict=True):
        log(f"  {name:<24} {'  n/a' if iou is None else f'{iou:.4f}'}")
    return 0


# --------------------------------------------------------------------------- parser


def _data_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset root (default: $COMPETITION_DATA, ./data, else the sample dataset)")


def _settings_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML or JSON file of settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting, repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./run.sh",
        description="COCO-format semantic-segmentation competition harness: k-fold CV training, Optuna search, "
        "TTA prediction, ensembles and submission CSVs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sample-data", help="write the synthetic sample dataset (competition layout) to DIR")
    p.add_argument("dir", help="output folder (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("data-info", help="validate a dataset root and show its classes, pixel shares and folds")
    _data_option(p)
    _settings_options(p)
    p.add_argument("--folds", type=int, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, help="fold seed (default 42)")
    p.set_defaults(func=cmd_data_info)

    p = sub.add_parser("check", help="validate a submission CSV against test.json; exit 1 with the reasons")
    p.add_argument("csv")
    _data_option(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("score", help="leaderboard scores of a submission against ground-truth annotations")
    p.add_argument("csv")
    p.add_argument("--gt", required=True, help="COCO file with the test annotations")
    _data_option(p)
    p.add_argument("--overlap", choices=["max", "small-on-top"], help="overlap policy for the ground truth")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. classes.UNKNOWN=ignore")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; re-run the same command to resume", file=sys.stderr)
        return 130
