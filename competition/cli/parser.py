"""The command line's grammar (../shared/CLI.md): one small function per command adds its options.

Parsing imports nothing heavy, so `--help` is instant; each command names its handler in competition.cli.commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from competition.core.config import PREDICTION_KEYS
from competition.core.names import NAMES


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
    p.add_argument("--image-size", help="training and validation image size: S (square) or HxW, e.g. 384x512")
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
    p.add_argument(
        "--post",
        default="none",
        metavar="auto|none|FILE",
        help="post-processing: auto = class calibration, dense CRF (where pydensecrf2 is installed) and small-region "
        "cleanup fitted out of fold, kept where they beat the noise (saved as postprocess.json); auto:STEPS = only "
        "those of calibration,crf,cleanup; FILE = a postprocess.json; none = argmax (default)",
    )
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="registered models: name, family (fcn | smp), parameter count")
    p.add_argument("--data", help="count parameters for this dataset's classes (default 12)")
    p.add_argument(
        "--encoders", metavar="PATTERN", help="list the encoder names matching a pattern (SMP's and timm's as tu-)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(handler="cmd_models")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="k-fold cross-validated training; per-fold and mean±std mIoU; a run folder")
    p.add_argument("model", help="a registered model (./run.sh models)")
    _training_options(p)
    p.add_argument("--fold", type=int, help="train only this fold")
    p.add_argument(
        "--gpus", type=int, metavar="N", help="data parallel: N processes per fold, one per GPU (gloo: --device cpu)"
    )
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run (skips finished folds)")
    p.add_argument("--force", action="store_true", help="resume even with settings that change the run's results")
    p.set_defaults(handler="cmd_train")


def _add_search(sub: argparse._SubParsersAction) -> None:
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
        help="keep out-of-fold probabilities (~0.5 GB per trial on real data) only for the best K trials; default 5",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        metavar="K",
        help="keep fold checkpoints (~135 MB per fold for VGG16 FCNs) only for the best K trials; default: all",
    )
    p.add_argument("--storage", help="Optuna storage URL (default sqlite in the runs folder); journal:PATH for a file")
    p.add_argument("--study", help="study name (default: the model name)")
    p.add_argument(
        "--pruner",
        choices=NAMES["pruner"],
        help="median (default), hyperband, wilcoxon (paired per-image test after each fold) or none; "
        "default: the study's",
    )
    p.add_argument(
        "--sampler",
        choices=NAMES["sampler"],
        help="tpe (default), gp (small budgets), random or qmc; default: the study's",
    )
    p.add_argument(
        "--sampler-seed", type=int, metavar="N", help="seed of the sampler (default: --seed; neither: a random stream)"
    )
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    p.add_argument(
        "--gpus-per-trial", type=int, metavar="G", help="data parallel trials: G devices each (workers x G <= GPUs)"
    )
    p.add_argument("--space", type=Path, help="search space file (YAML or JSON) replacing the model's default")
    p.add_argument("--force", action="store_true", help="continue the study even with other fixed settings")
    p.add_argument(
        "--no-predict", action="store_true", help="do not predict the test set with the best trial at the end"
    )
    p.set_defaults(handler="cmd_search")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="test-set probabilities for a run (all its folds) and its submission CSV")
    p.add_argument("run", help="run id, unique id prefix, run folder, trial:STUDY:NUMBER or best:STUDY")
    _prediction_options(p)
    p.add_argument("--name", help="submissions/NAME.csv (default: the run id, plus -tta with TTA)")
    p.set_defaults(handler="cmd_predict")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a run's folds as one ONNX or TorchScript graph (softmax mean), to predict alone")
    p.add_argument("run", help="run id, unique id prefix, run folder, trial:STUDY:NUMBER or best:STUDY")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default onnx")
    p.add_argument("--out", help="the graph's file (default runs/<id>/export/<id>.onnx or .pt; a .json beside it)")
    p.add_argument("--data", help="dataset root for the class table (default: the run's)")
    p.add_argument("--runs-dir", default="runs", help="where run folders are (default runs/)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler="cmd_export")


def _add_ensemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ensemble", help="soft-vote ensemble of runs (or hard vote of CSVs) -> submissions/NAME.csv")
    p.add_argument("runs", nargs="*", metavar="RUN", help="two or more runs (ids, prefixes, folders, trial refs)")
    p.add_argument("--from-csv", nargs="+", metavar="CSV", help="pixel-wise majority vote of these CSVs instead")
    p.add_argument(
        "--select", metavar="top:K", help="members from the leaderboard: the K best runs, distinct models first"
    )
    p.add_argument(
        "--weights",
        default="auto",
        help="auto (equal, best member or greedy, checked on held-out halves), equal, or w1,w2,... (default auto)",
    )
    _prediction_options(p)
    p.add_argument("--name", help="submissions/NAME.csv and runs/NAME (default: ensemble-DATE-HEX)")
    p.set_defaults(handler="cmd_ensemble")


def _add_leaderboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard", help="runs, trials and ensembles ranked by CV mIoU, beside their recorded LB scores"
    )
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--json", action="store_true", help="print one JSON list, best first")
    p.set_defaults(handler="cmd_leaderboard")


def _add_lb(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lb", help="record the leaderboard score a submission got (keyed by its content)")
    p.add_argument("csv", help="the submitted CSV (any copy: it is matched by its content's SHA-256)")
    p.add_argument("score", type=float, help="the public leaderboard mIoU it got, e.g. 0.6123")
    p.add_argument("--private", type=float, metavar="SCORE", help="its private leaderboard mIoU, when known")
    p.add_argument("--runs-dir", default="runs", help="where run folders are; the scores go to RUNS/lb_scores.json")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler="cmd_lb")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of the runs folder (no network needed)")
    p.add_argument("--out", type=Path, metavar="FILE.html", help="where to write it (default RUNS/report.html)")
    p.add_argument("--runs-dir", default="runs", help="the runs folder to report on (default runs/)")
    p.add_argument("--storage", help="study storage URL (default: the runs folder's optuna.db, when present)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="detail the best K runs (default 5)")
    p.add_argument("--worst", type=int, default=6, metavar="N", help="worst validation images per run (default 6)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler="cmd_report")


def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve optuna-dashboard on the study storage, on 127.0.0.1 (Ctrl-C stops)")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080; 0 = any free port)")
    p.add_argument("--runs-dir", default="runs", help="whose optuna.db to serve (default runs/)")
    p.add_argument("--storage", help="study storage URL instead (as search --storage)")
    p.set_defaults(handler="cmd_dashboard")


def _add_storage_proxy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("storage-proxy", help="Optuna's gRPC storage proxy: many workers, one database client")
    p.add_argument("--storage", help="the study storage it serves (as search --storage; default runs/optuna.db)")
    p.add_argument("--port", type=int, default=13000, help="port (default 13000); workers use grpc://HOST:PORT")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--runs-dir", default="runs", help="whose optuna.db to serve without --storage (default runs/)")
    p.set_defaults(handler="cmd_storage_proxy")


def _add_sample_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample-data", help="write the synthetic sample dataset (competition layout) to DIR")
    p.add_argument("dir", help="output folder (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler="cmd_sample_data")


def _add_data_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data-info", help="validate a dataset root and show its classes, pixel shares and folds")
    _data_option(p)
    _settings_options(p)
    p.add_argument("--folds", type=int, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, help="fold seed (default 42)")
    p.set_defaults(handler="cmd_data_info")


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a submission CSV against test.json; exit 1 with the reasons")
    p.add_argument("csv")
    _data_option(p)
    p.set_defaults(handler="cmd_check")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="leaderboard scores of a submission against ground-truth annotations")
    p.add_argument("csv")
    p.add_argument("--gt", required=True, help="COCO file with the test annotations")
    _data_option(p)
    p.add_argument("--overlap", choices=["max", "small-on-top"], help="overlap policy for the ground truth")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. classes.UNKNOWN=ignore")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler="cmd_score")


def _add_pseudo_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pseudo-label", help="a pseudo-labelled set from a run's test probabilities")
    p.add_argument("run", help="run id, unique id prefix, run folder, trial:STUDY:NUMBER or best:STUDY")
    p.add_argument("--threshold", type=float, default=0.9, help="pixels whose top probability is lower are ignored")
    p.add_argument("--name", help="runs/pseudo/NAME (default: RUN-tTHRESHOLD)")
    p.add_argument("--runs-dir", default="runs", help="where run folders are (default runs/)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler="cmd_pseudo_label")


COMMANDS = (
    _add_models,
    _add_train,
    _add_search,
    _add_predict,
    _add_export,
    _add_ensemble,
    _add_leaderboard,
    _add_lb,
    _add_report,
    _add_dashboard,
    _add_storage_proxy,
    _add_sample_data,
    _add_data_info,
    _add_check,
    _add_score,
    _add_pseudo_label,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./run.sh",
        description="COCO-format semantic-segmentation competition harness: k-fold CV training, Optuna search, "
        "TTA prediction, ensembles and submission CSVs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser
