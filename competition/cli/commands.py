"""One function per command: turn the parsed arguments into plain values, call one library function, print.

Exit codes: 0 success; 1 a user error (one line naming the file and the record); 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import models
from competition import data, ensemble, predict, report, search, submit, train
from competition.cli.output import emit_json, logger
from competition.core.config import PREDICTION_KEYS, resolve, user_settings
from competition.core.errors import UsageError
from competition.core.runs import find_run, new_run_id


def cmd_models(args: argparse.Namespace) -> int:
    if args.encoders:
        names = models.list_encoders(args.encoders)
        if args.json:
            emit_json(names)
            return 0
        print("\n".join(names) if names else f"no encoder matches {args.encoders!r} (try 'convnext*' or 'tu-*vit*')")
        return 0
    n = data.DataRoot(Path(args.data), check_images=False).classes().num_classes if args.data else 12
    rows = [
        {"name": s.name, "family": s.family, "params": models.count_parameters(s.name, n), "description": s.description}
        for s in models.list_models()
    ]
    if args.json:
        emit_json(rows)
        return 0
    print(f"{'name':<14} {'family':<6} {'params':>12}  ({n} classes)")
    for r in rows:
        print(f"{r['name']:<14} {r['family']:<6} {r['params']:>12,}  {r['description']}")
    print(f"\nrecommended encoders for the smp models (--set encoder=NAME; params of unet, {n} classes):")
    for name, note in models.RECOMMENDED_ENCODERS:
        print(f"  {name:<28} {models.count_parameters('unet', n, {'encoder': name}):>12,}  {note}")
    print("any timm model works as tu-NAME: ./run.sh models --encoders 'convnext*'")
    return 0


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the user gave to train or search (--config < --set < flags), checked."""
    flags = {
        "folds": args.folds,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "fold": getattr(args, "fold", None),
        "gpus": getattr(args, "gpus", None) or getattr(args, "gpus_per_trial", None),
    }
    return user_settings(args.config, args.set, flags)


def cmd_train(args: argparse.Namespace) -> int:
    log = logger(args)
    given = training_settings(args)
    runs_dir = Path(args.runs_dir)
    if args.resume:
        run_dir = find_run(runs_dir, args.resume)
        cfg = train.resume_settings(run_dir, args.model, args.data, given, args.force, log)
    else:
        cfg = train.new_run_settings(args.model, args.data, given, log)
        run_dir = runs_dir / new_run_id(cfg["model"])
    log(
        f"run {run_dir.name}: {cfg['model']}, {cfg['folds'] if cfg['split'] == 'kfold' else 1} folds, "
        f"{cfg['epochs']} epochs, image size {cfg['image_size']}, batch {cfg['batch_size']}"
    )
    results = train.train_run(cfg, run_dir, log)
    if args.json:
        keys = ("run", "model", "folds", "miou", "miou_std", "dir", "metric", "background_only")
        emit_json({k: results[k] for k in keys})
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    request = search.SearchRequest(
        model=args.model, data=args.data, given=training_settings(args), runs_dir=Path(args.runs_dir),
        trials=args.trials, space=args.space, storage=args.storage, study=args.study, pruner=args.pruner,
        sampler=args.sampler, sampler_seed=args.seed if args.sampler_seed is None else args.sampler_seed,
        timeout=args.timeout, epoch_budget=args.epoch_budget,
        keep_oof=args.keep_oof, workers=args.workers, force=args.force, predict=not args.no_predict,
        keep_checkpoints=args.keep_checkpoints,
    )  # fmt: skip
    result = search.run_search(request, logger(args))
    if args.json:
        emit_json(result)
    return 0


def prediction_settings(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The run settings predict and ensemble may override (--set and the --batch-size/--device flags)."""
    flags = {"batch_size": args.batch_size, "device": args.device}
    return user_settings(sets=args.set, flags=flags, allowed=PREDICTION_KEYS, command=command)


def cmd_predict(args: argparse.Namespace) -> int:
    settings = prediction_settings(args, "predict")
    run_dir = find_run(Path(args.runs_dir), args.run)
    log = logger(args)
    decision = ensemble.run_post(args.post, run_dir, args.data, log)
    result = predict.predict_run(run_dir, args.data, args.tta, args.name, settings, log=log, decision=decision)
    if args.json:
        emit_json(result)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    run_dir = find_run(Path(args.runs_dir), args.run)
    out = Path(args.out) if args.out else None
    result = predict.export_run(run_dir, args.format, out, args.data, logger(args))
    if args.json:
        emit_json(result)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    log = logger(args)
    settings = prediction_settings(args, "ensemble")
    if args.from_csv:
        if args.runs or args.select:
            dropped = " ".join(args.runs) if args.runs else f"--select {args.select}"
            raise UsageError(f"ensemble --from-csv votes CSV files; drop {dropped}")
        result = ensemble.vote_csvs([Path(p) for p in args.from_csv], args.data, args.name, log=log)
    else:
        runs_dir = Path(args.runs_dir)
        if args.select and args.runs:
            raise UsageError(f"ensemble --select picks the runs; drop the RUN arguments {' '.join(args.runs)}")
        refs = ensemble.select_members(args.select, runs_dir, log) if args.select else args.runs
        result = ensemble.ensemble_runs(
            refs, runs_dir, args.name, args.weights, args.data, args.tta, settings, log=log, post=args.post
        )
    if args.json:
        emit_json(result)
    return 0


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir)
    result = predict.pseudo_label(find_run(runs_dir, args.run), runs_dir, args.threshold, args.name, logger(args))
    if args.json:
        emit_json(result)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    rows = train.leaderboard_rows(Path(args.runs_dir), pruned=True)
    if args.csv:
        train.write_leaderboard_csv(rows, Path(args.csv))
        print(f"leaderboard written to {args.csv}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        emit_json(rows)
    elif not args.csv:
        print(train.format_table(rows))
    return 0


def cmd_lb(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir)
    record = submit.record_lb(Path(args.csv), args.score, args.private, runs_dir)
    if args.json:
        emit_json(record)
        return 0
    private = f", private {record['private']:.4f}" if record["private"] is not None else ""
    print(f"recorded LB {record['public']:.4f}{private} for {args.csv} (sha256 {record['sha256'][:12]})")
    row = next((r for r in train.leaderboard_rows(runs_dir) if r["run"] == record["run"]), None)
    if row:
        gap = row["miou"] - record["public"]
        print(f"made by {row['kind']} {row['run']}: CV {row['miou']:.4f}, CV - LB {gap:+.4f}")
    elif record["run"]:
        print(f"made by run {record['run']} (not complete in {runs_dir}: no CV to compare)")
    else:
        print(f"made by no run in {runs_dir} or ./submissions (no sidecar with its content); kept for when one is")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.top < 0 or args.worst < 0:
        raise UsageError(f"report: --top {args.top} and --worst {args.worst} must be 0 or more")
    result = report.write_report(Path(args.runs_dir), args.out, args.storage, args.top, args.worst, logger(args))
    if args.json:
        emit_json(result)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0..65535")
    report.serve_dashboard(Path(args.runs_dir), args.storage, args.port, logger(args))
    return 0


def cmd_storage_proxy(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 1..65535")
    search.serve_storage_proxy(
        search.storage_url(args.storage, Path(args.runs_dir)), args.host, args.port, logger(args)
    )
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    root = data.write_sample_dataset(Path(args.dir), seed=args.seed)
    print(f"sample dataset written to {root}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    log = logger(args)
    cfg = resolve(config_file=args.config, sets=args.set, flags={"folds": args.folds, "seed": args.seed})
    data.describe_dataset(data.DataRoot(data.resolve_data_root(args.data, log)), cfg, log)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    log = logger(args)
    root = data.DataRoot(data.resolve_data_root(args.data, log=lambda m: print(m, file=sys.stderr)), check_images=False)
    test = root.coco("test")
    problems = submit.check_submission(Path(args.csv), [im.file_name for im in test.images], root.classes().num_classes)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 1
    log(f"{args.csv}: valid ({len(test.images)} rows, {root.classes().num_classes} classes)")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    log = logger(args)
    cfg = resolve(sets=args.set, flags={"overlap": args.overlap})
    scores, classes = submit.score_submission(Path(args.csv), Path(args.gt), args.data, cfg, log)
    if args.json:
        emit_json(scores.to_dict())
        return 0
    log(f"per-image mIoU (run A leaderboard): {scores.miou_image:.4f}")
    log(f"dataset mIoU:                       {scores.miou_dataset:.4f}")
    log(f"pixel accuracy:                     {scores.pixel_accuracy:.4f}")
    for name, iou in zip(classes.names, scores.per_class, strict=True):
        log(f"  {name:<24} {'  n/a' if iou is None else f'{iou:.4f}'}")
    return 0
