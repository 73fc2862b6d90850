"""docs/SCALING.md: every command line in it (the SLURM and Kubernetes examples, the inline ones) is one the
real command-line parser accepts, and its command's --help runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from competition.cli.parser import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "SCALING.md"
ENV = {"STORAGE": "postgresql://search:pw@db-host:5432/optuna", "PGPASSWORD": "pw"}


def command_lines() -> list[str]:
    text = DOC.read_text()
    lines = re.findall(r"`(\./run\.sh [^`]+)`", text)  # inline
    for block in re.findall(r"```(?:bash|yaml)\n(.*?)```", text, flags=re.S):
        lines += [line[line.index("./run.sh") :] for line in block.splitlines() if "./run.sh" in line]
    return lines


def argv(line: str) -> list[str]:
    for key, value in ENV.items():
        line = line.replace(f"${key}", value)
    return shlex.split(line)[1:]


def test_the_examples_hold_the_commands_they_should():
    lines = command_lines()
    assert sum("--storage" in line and "postgresql://" in line or "$STORAGE" in line for line in lines) >= 2
    assert any("--gpus" in line for line in lines) and any("--workers" in line for line in lines)


@pytest.mark.parametrize("line", command_lines())
def test_every_command_line_parses(line):
    words = argv(line)
    if any(w in ("MODEL", "N", "W", "G") or w.endswith("...") for w in words):  # the table's placeholders
        words = [{"MODEL": "unet", "N": "2", "W": "2", "G": "2"}.get(w, w) for w in words]
        words = [w.replace("postgresql://...", ENV["STORAGE"]) for w in words]
    args = build_parser().parse_args(words)  # SystemExit (2) on an option the command does not have
    assert args.handler.startswith("cmd_")


def test_each_command_of_the_examples_has_help():
    for command in sorted({argv(line)[0] for line in command_lines()}):
        done = subprocess.run([sys.executable, "-m", "competition", command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr)
