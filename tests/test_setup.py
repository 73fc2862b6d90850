"""`COMPETITION_SYSTEM_TORCH=1 ./run.sh setup` reuses the interpreter's torch and torchvision, pinned to the
versions pip knows them by, or stops in one line before it touches `.venv`. (The whole path with a real torch 2.11
in a system Python 3.12: `bash benchmarks/ubuntu.sh system-torch`, which needs network.)"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def interpreter(tmp_path: Path, torch: str | None = None, local: str = "") -> str:
    """A bare venv's python; with `torch`, fake torch and torchvision packages of that version installed in it
    (metadata `torch`, `torch.__version__` with the `local` tag, as a PyPI CUDA build has them)."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(tmp_path / "py")], check=True)
    python = str(tmp_path / "py" / "bin" / "python")
    if torch:
        code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        site = Path(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip())
        for name, version in (("torch", torch), ("torchvision", "0.26.0")):
            (site / name).mkdir()
            (site / name / "__init__.py").write_text(f"__version__ = '{version}{local}'\n")
            info = site / f"{name}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return python


def setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """`./run.sh setup` of a copy of the checkout's setup files, with a `.venv` already there, under `env`."""
    for name in ("run.sh", "pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "kept").write_text("a venv of before")
    return subprocess.run(["bash", str(tmp_path / "run.sh"), "setup"], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    ("torch", "says"),
    [(None, "has no torch and torchvision to reuse (ModuleNotFoundError"), ("2.3.1", "has torch 2.3.1+cu121, older")],
)
def test_no_torch_or_an_old_one_is_one_line_before_the_venv_is_touched(tmp_path, torch, says):
    python = interpreter(tmp_path, torch, "+cu121")
    done = setup(tmp_path, COMPETITION_SYSTEM_TORCH="1", PYTHON=python)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"setup: COMPETITION_SYSTEM_TORCH=1: {python} {says}"), lines
    assert (tmp_path / ".venv" / "kept").read_text() == "a venv of before"


def test_the_pins_are_the_versions_pip_knows_not_torch_version(tmp_path):
    """pip sees a PyPI CUDA build of torch as 2.11.0 (its metadata), while torch.__version__ says 2.11.0+cu130:
    a pin with the local tag made pip refuse the very torch it was meant to keep (ResolutionImpossible)."""
    text = (ROOT / "run.sh").read_text()
    check = re.search(r"^SYSTEM_TORCH_CHECK='\n(.*?)^'\n", text, re.S | re.M).group(1).replace("'\"'\"'", "'")
    python = interpreter(tmp_path, "2.11.0", "+cu130")
    done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["torch==2.11.0", "torchvision==0.26.0"]


def test_setup_help_is_the_header_and_no_code():
    done = subprocess.run(["bash", str(ROOT / "run.sh"), "setup", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "COMPETITION_SYSTEM_TORCH=1 ./run.sh setup" in done.stdout
    assert not any(line.startswith(("set ", "HERE=", "#!")) for line in done.stdout.splitlines()), done.stdout


def test_a_missing_interpreter_is_one_line_and_exit_1(tmp_path):
    done = setup(tmp_path, PYTHON="python3.99")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == ["setup: no interpreter 'python3.99' (PYTHON=python3.99)"]
    assert (tmp_path / ".venv" / "kept").read_text() == "a venv of before"
