"""The harness against a plain hand-written loop (benchmarks/peer_loop.py) at equal budget on the sample data: a
short run must reach a stated fraction of the plain loop's test score, so a training gap cannot come back
unnoticed (benchmarks/bench_peer.py measures the full comparison; no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from competition.cli import main
from competition.data import write_sample_dataset

ROOT = Path(__file__).resolve().parents[1]
BUDGET = {"epochs": 6, "image_size": 64, "batch_size": 4, "lr": 1e-3, "folds": 2}
# measured with bench_peer.py on the sample (3 seeds at this budget): see benchmarks/RESULTS.md "Against a plain loop"
FRACTION = 0.9


def score(capsys, csv: Path, gt: Path, data: Path) -> float:
    capsys.readouterr()
    assert main(["score", str(csv), "--gt", str(gt), "--data", str(data), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["miou_image"]


def test_a_short_harness_run_reaches_the_plain_loops_test_score(tmp_path, capsys, monkeypatch):
    data = write_sample_dataset(tmp_path / "sample")
    b = BUDGET
    plain_csv = tmp_path / "plain.csv"
    peer = [sys.executable, str(ROOT / "benchmarks" / "peer_loop.py"), "--data", str(data), "--out", str(plain_csv)]
    peer += ["--epochs", str(b["epochs"]), "--image-size", str(b["image_size"]), "--batch-size", str(b["batch_size"])]
    peer += ["--lr", str(b["lr"]), "--folds", str(b["folds"]), "--seed", "0"]
    subprocess.run(peer, check=True, capture_output=True, timeout=600)
    monkeypatch.chdir(tmp_path)  # the harness's submission goes to tmp_path/submissions
    args = ["--data", str(data), "--runs-dir", str(tmp_path / "runs"), "--json"]
    budget = ["--epochs", str(b["epochs"]), "--image-size", str(b["image_size"]), "--folds", str(b["folds"])]
    budget += ["--batch-size", str(b["batch_size"]), "--seed", "0", "--set", f"lr={b['lr']}"]
    weights = ["--set", "encoder=timm-tf_efficientnet_lite0", "--set", "encoder_weights=imagenet"]
    assert main(["train", "unet", *args, *budget, *weights, "--set", "tracker=none"]) == 0
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dir"]
    assert main(["predict", run, *args]) == 0
    harness_csv = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["csv"])
    gt = data / "test_gt.json"
    plain, harness = score(capsys, plain_csv, gt, data), score(capsys, harness_csv, gt, data)
    assert plain > 0.2  # the plain loop learns on this budget: the comparison means something
    assert harness >= FRACTION * plain, f"harness {harness:.4f} < {FRACTION} x plain loop {plain:.4f}"
