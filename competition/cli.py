"""`./run.sh COMMAND ...`: the command-line contract of ../shared/CLI.md.

Exit codes: 0 success; 1 a user error (one line naming the file and the record); 2 usage error.
With --json the last line of stdout is one JSON object and human output goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from competition.config import MACHINERY, PREDICTION_KEYS, user_settings
from competition.errors import UsageError, UserError

Log = Callable[[str], None]


def _logger(args: argparse.Namespace) -> Log:
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=stream, flush=True)

    return log


_json_out: list[Any] = []  # where --json results go: the real stdout, while everything else goes to stderr


def _emit_json(obj: Any) -> None:
    stream = _json_out[-1] if _json_out else sys.stdout
    print(json.dumps(obj, default=str), file=stream, flush=True)


@contextlib.contextmanager
def json_stdout() -> Iterator[None]:
    """Under --json, only the final JSON reaches stdout: from here on stdout (file descriptor 1, inherited by
    worker processes, and sys.stdout) points to stderr; _emit_json writes to the saved real stdout."""
    real = sys.stdout
    try:
        fd = real.fileno()
    except (AttributeError, OSError, ValueError):  # a captured or replaced stdout: swap the Python objects only
        fd = None
    if fd is None:
        _json_out.append(real)
        sys.stdout = sys.stderr
        try:
            yield
        finally:
            sys.stdout = real
            _json_out.pop()
        return
    real.flush()
    saved = os.dup(fd)
    os.dup2(sys.stderr.fileno(), fd)
    out = os.fdopen(os.dup(saved), "w")
    _json_out.append(out)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)
        _json_out.pop()
        out.close()


# --------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    import models
    from competition.data import DataRoot

    n = DataRoot(Path(args.data), check_images=False).classes().num_classes if args.data else 12
    rows = [
        {
            "name": s.name,
            "family": s.family,
            "params": models.count_parameters(s.name, n),
            "description": s.description,
        }
        for s in models.list_models()
    ]
    if args.json:
        _emit_json(rows)
        return 0
    print(f"{'name':<14} {'family':<6} {'params':>12}  ({n} classes)")
    for r in rows:
        print(f"{r['name']:<14} {r['family']:<6} {r['params']:>12,}  {r['description']}")
    return 0


def training_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings train and search take as flags (None: not given)."""
    return {
        "folds": args.folds,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "fold": getattr(args, "fold", None),
    }


def resolve_settings(args: argparse.Namespace, log: Log) -> tuple[dict[str, Any], dict[str, Any]]:
    """Settings of a new run: defaults < model < sample-data quick profile < --config < --set < flags.

    Returns them and what the user gave; everything is checked before any work (even sample data) starts.
    """
    import models
    from competition.config import QUICK_PROFILE, describe, resolve
    from competition.data import is_sample, resolve_data_root

    spec = models.get_spec(args.model)
    given = user_settings(args.config, args.set, training_flags(args))
    data = resolve_data_root(args.data, log)
    quick = is_sample(data)
    if quick:
        log(f"profile: quick (sample data): {describe(QUICK_PROFILE)}")
    cfg = resolve(spec.defaults, profile=QUICK_PROFILE if quick else None, given=given)
    cfg.update(model=spec.name, data=str(data))
    check_against_data(cfg)
    return cfg, given


def check_against_data(cfg: dict[str, Any]) -> None:
    """Settings that depend on the dataset: the class policy and one class weight per class."""
    from competition.data import DataRoot

    classes = DataRoot(Path(cfg["data"]), check_images=False).classes(cfg["classes"], cfg["ignore_index"])
    weights = cfg["class_weights"]
    if isinstance(weights, list) and len(weights) != classes.num_classes:
        names = ", ".join(classes.names)
        raise UsageError(f"setting class_weights: {len(weights)} values for {classes.num_classes} classes ({names})")


def cmd_train(args: argparse.Namespace) -> int:
    from competition.runs import find_run, new_run_id
    from competition.train import train_run

    log = _logger(args)
    runs_dir = Path(args.runs_dir)
    if args.resume:
        run_dir = find_run(runs_dir, args.resume)
        cfg = resume_settings(args, run_dir, log)
    else:
        cfg, _ = resolve_settings(args, log)
        run_dir = runs_dir / new_run_id(cfg["model"])
    log(
        f"run {run_dir.name}: {cfg['model']}, {cfg['folds'] if cfg['split'] == 'kfold' else 1} folds, "
        f"{cfg['epochs']} epochs, image size {cfg['image_size']}, batch {cfg['batch_size']}"
    )
    results = train_run(cfg, run_dir, log)
    if args.json:
        keys = ("run", "model", "folds", "miou", "miou_std", "dir", "metric", "background_only")
        _emit_json({k: results[k] for k in keys})
    return 0


def resume_settings(args: argparse.Namespace, run_dir: Path, log: Log) -> dict[str, Any]:
    """A run's saved settings; settings given now that would change its results are refused unless --force."""
    from competition.config import describe, differences, read_config_file, validate
    from competition.data import resolve_data_root

    given = user_settings(args.config, args.set, training_flags(args))
    cfg = read_config_file(run_dir / "config.json")
    if cfg["model"] != args.model:
        raise UsageError(f"{run_dir}: run of model {cfg['model']}, not {args.model}")
    if args.data:
        data = resolve_data_root(args.data, log)
        given["data"] = cfg["data"] if data.resolve() == Path(cfg["data"]).resolve() else str(data)
    changed = differences(cfg, given)
    if changed and not args.force:
        raise UsageError(
            f"{run_dir}: resuming with other settings would change its results: {', '.join(changed)}; "
            "drop them, start a new run, or --force"
        )
    if given:
        log(f"resuming with: {describe(given)}")
    log(f"resuming {run_dir} with its saved settings")
    return validate({**cfg, **given})


def cmd_search(args: argparse.Namespace) -> int:
    import models
    from competition import search
    from competition.config import describe, validate
    from competition.data import is_sample
    from competition.leaderboard import format_table, leaderboard_rows

    if args.keep_oof < 0:
        raise UsageError(f"--keep-oof {args.keep_oof}: expected 0 or more trials")
    if args.trials is not None and args.trials < 0:
        raise UsageError(f"--trials {args.trials}: expected 0 or more")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: expected 1 or more")
    log = _logger(args)
    space_file = search.load_space(args.space) if args.space else None
    cfg, given = resolve_settings(args, log)
    quick = is_sample(Path(cfg["data"]))
    spec = models.get_spec(cfg["model"])
    space = space_file if space_file is not None else dict(spec.quick_space if quick else spec.search_space)
    trials = args.trials if args.trials is not None else (4 if quick else 20)
    runs_dir = Path(args.runs_dir)
    url = search.storage_url(args.storage, runs_dir)
    name = args.study or cfg["model"]
    fixed = {k: v for k, v in given.items() if k not in MACHINERY}
    if fixed:
        log(f"fixed by you: {describe(fixed)}")
    fixed = search.prepare_study(url, name, cfg, fixed, args.pruner, args.seed, runs_dir, args.force, log)
    cfg = validate({**cfg, **fixed})
    space = {k: v for k, v in space.items() if k not in fixed}
    if not space:
        raise UsageError("nothing left to search: every setting of the search space is fixed; drop some settings")
    log(f"search space: {', '.join(space)}")
    job = search.SearchJob(
        url, name, cfg, space, runs_dir, args.pruner, args.seed, args.timeout, args.epoch_budget, args.keep_oof
    )
    study = search.launch(job, trials, args.workers, log)
    result = search.summarize(study, url, runs_dir / "studies" / name, log)
    result["fixed"] = fixed
    log("")
    log(format_table(leaderboard_rows(runs_dir)))
    if result["best"] and not args.no_predict:
        result["submission"] = predict_best(runs_dir, name, result["best"]["run"], log)
    if args.json:
        _emit_json(result)
    return 0


def predict_best(runs_dir: Path, study: str, run: str, log: Log) -> str:
    """The submission of the study's best trial (all its folds): submissions/<study>-best.csv."""
    from competition.predict import predict_run

    log("")
    log(f"predicting the test set with the best trial ({run}) ...")
    result = predict_run(runs_dir / run, name=f"{study}-best", log=log)
    log(f"ready to upload: {result['csv']}")
    return result["csv"]


def cmd_predict(args: argparse.Namespace) -> int:
    from competition.predict import predict_run
    from competition.runs import find_run

    log = _logger(args)
    settings = prediction_settings(args, "predict")
    run_dir = find_run(Path(args.runs_dir), args.run)
    result = predict_run(run_dir, args.data, args.tta, args.name, settings, log=log)
    if args.json:
        _emit_json(result)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from competition.ensemble import ensemble_runs, vote_csvs

    log = _logger(args)
    settings = prediction_settings(args, "ensemble")
    if args.from_csv:
        if args.runs:
            raise UserError(f"ensemble --from-csv votes CSV files; drop the RUN arguments {' '.join(args.runs)}")
        result = vote_csvs([Path(p) for p in args.from_csv], args.data, args.name, log=log)
    else:
        result = ensemble_runs(
            args.runs,
            Path(args.runs_dir),
            args.name,
            args.weights,
            args.data,
            args.tta,
            settings,
            log=log,
        )
    if args.json:
        _emit_json(result)
    return 0


def prediction_settings(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The run settings predict and ensemble may override (--set and the --batch-size/--device flags)."""
    flags = {"batch_size": args.batch_size, "device": args.device}
    return user_settings(sets=args.set, flags=flags, allowed=PREDICTION_KEYS, command=command)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from competition.leaderboard import format_table, leaderboard_rows, write_csv

    rows = leaderboard_rows(Path(args.runs_dir))
    if args.csv:
        write_csv(rows, Path(args.csv))
        print(f"leaderboard written to {args.csv}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        _emit_json(rows)
    elif not args.csv:
        print(format_table(rows))
    return 0


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


def _training_options(p: argparse.ArgumentParser) -> None:
    """The options train and search share (../shared/CLI.md, common options)."""
    _data_option(p)
    p.add_argument("--folds", type=int, help="number of folds (default 5)")
    p.add_argument("--epochs", type=int, help="epochs per fold")
    p.add_argument("--image-size", type=int, help="training and validation image size (square)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int, help="seed of folds, initialisation and sampling (default 42)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto = GPU when present")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default runs/)")
    _settings_options(p)
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def _prediction_options(p: argparse.ArgumentParser) -> None:
    """The options predict and ensemble share."""
    p.add_argument("--tta", help="test-time augmentation: hflip, vflip and scales, e.g. hflip,vflip,0.75,1,1.25")
    p.add_argument("--data", help="dataset root whose test.json is predicted (default: the run's dataset)")
    p.add_argument("--runs-dir", default="runs", help="where run folders are (default runs/)")
    p.add_argument("--batch-size", type=int, help="test images per batch (default: the run's batch size)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto = GPU when present (default)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a run setting for prediction: {', '.join(PREDICTION_KEYS)}",
    )
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./run.sh",
        description="COCO-format semantic-segmentation competition harness: k-fold CV training, Optuna search, "
        "TTA prediction, ensembles and submission CSVs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="registered models: name, family (fcn | smp), parameter count")
    p.add_argument("--data", help="count parameters for this dataset's classes (default 12)")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="k-fold cross-validated training; per-fold and mean±std mIoU; a run folder")
    p.add_argument("model", help="a registered model (./run.sh models)")
    _training_options(p)
    p.add_argument("--fold", type=int, help="train only this fold")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run (skips finished folds)")
    p.add_argument("--force", action="store_true", help="resume even with settings that change the run's results")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="Optuna study whose objective is k-fold CV mIoU; creates or resumes")
    p.add_argument("model", help="a registered model (./run.sh models)")
    _training_options(p)
    p.add_argument(
        "--trials", type=int, help="trials this process runs now (more, if the study exists); default 20 (4 on sample)"
    )
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument(
        "--epoch-budget", type=int, metavar="N", help="stop starting trials once this search has trained N epochs"
    )
    p.add_argument(
        "--keep-oof",
        type=int,
        default=5,
        metavar="K",
        help="keep out-of-fold probabilities (~1 GB per trial on real data) only for the best K trials; default 5",
    )
    p.add_argument("--storage", help="Optuna storage URL (default sqlite in the runs folder); journal:PATH for a file")
    p.add_argument("--study", help="study name (default: the model name)")
    p.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    p.add_argument("--space", type=Path, help="search space file (YAML or JSON) replacing the model's default")
    p.add_argument("--force", action="store_true", help="continue the study even with other fixed settings")
    p.add_argument(
        "--no-predict", action="store_true", help="do not predict the test set with the best trial at the end"
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("predict", help="test-set probabilities for a run (all its folds) and its submission CSV")
    p.add_argument("run", help="run id, unique id prefix, run folder, trial:STUDY:NUMBER or best:STUDY")
    _prediction_options(p)
    p.add_argument("--name", help="submissions/NAME.csv (default: the run id, plus -tta with TTA)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ensemble", help="soft-vote ensemble of runs (or hard vote of CSVs) -> submissions/NAME.csv")
    p.add_argument("runs", nargs="*", metavar="RUN", help="two or more runs (ids, prefixes, folders, trial refs)")
    p.add_argument("--from-csv", nargs="+", metavar="CSV", help="pixel-wise majority vote of these CSVs instead")
    p.add_argument("--weights", default="auto", help="auto (best out-of-fold mIoU), equal, or w1,w2,... (default auto)")
    _prediction_options(p)
    p.add_argument("--name", help="submissions/NAME.csv and runs/NAME (default: ensemble-DATE-HEX)")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("leaderboard", help="runs, trials and ensembles ranked by CV mIoU")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--json", action="store_true", help="print one JSON list, best first")
    p.set_defaults(func=cmd_leaderboard)

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
        with json_stdout() if getattr(args, "json", False) else contextlib.nullcontext():
            return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; re-run the same command to resume", file=sys.stderr)
        return 130
