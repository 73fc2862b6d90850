"""Progress: bars with ETA on a terminal (a pseudo-terminal here), plain lines with the ETA under --json (and
when not a terminal: every other test's output); training ends with its summary table either way."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from competition.core.progress import eta
from competition.data import write_sample_dataset

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--folds", "2", "--epochs", "2", "--image-size", "32", "--batch-size", "4", "--device", "cpu",
         "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=0"]  # fmt: skip
BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[\d\d:\d\d<\d\d:\d\d")  # tqdm: 50%|####  | 2/4 [00:03<00:03, ...]


def on_terminal(args: list[str], cwd: Path) -> str:
    """Run `python -m competition ARGS` with stdout and stderr on a pseudo-terminal; everything it printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))  # rows, columns
    proc = subprocess.Popen(
        [sys.executable, "-m", "competition", *args], stdout=follower, stderr=follower, cwd=cwd, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the follower side closed: the process is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def data(tmp_path) -> Path:
    return write_sample_dataset(tmp_path / "sample", n_train=10, n_test=4, size=40)


def test_terminal_gets_bars_with_eta_and_the_summary_table(data, tmp_path):
    out = on_terminal(["train", "unet", "--data", str(data), *TRAIN], tmp_path)
    assert BAR.search(out), out[-2000:]
    assert re.search(r"run unet-[\w-]+: +\d+%\|", out)  # the run's epochs bar
    assert "fold 1 epoch 2/2: loss" in out
    assert re.search(r"fold +best epoch +mIoU\(image\)", out) and "CV mIoU (image)" in out


def test_json_on_a_terminal_gets_plain_lines_with_the_eta(data, tmp_path):
    out = on_terminal(["train", "unet", "--data", str(data), "--json", *TRAIN], tmp_path)
    assert not BAR.search(out) and "%|" not in out, out[-2000:]
    epochs = [line for line in out.splitlines() if re.match(r"fold \d epoch \d/2: loss", line)]
    assert len(epochs) == 4  # one line per epoch per fold
    assert all(re.search(r"run ETA (\d+s|\d+m\d\ds)\]\r?$", line) for line in epochs[:-1]), epochs
    assert epochs[-1].rstrip().endswith("run ETA 0s]")
    assert "CV mIoU (image)" in out and out.rstrip().splitlines()[-1].startswith("{")


def test_eta_format():
    assert [eta(s) for s in (0, 44.6, 185, 7620)] == ["0s", "45s", "3m05s", "2h07m"]
