"""`report`: one self-contained HTML file; rendered by headless Chromium, every image loads and the page is
not blank. Skipped only when Debian's `chromium` is not installed (.ci/run installs it)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from competition.cli import main
from competition.submit import record_lb

CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const all = Array.from(document.images);
  const ok = all.filter((im) => im.complete && im.naturalWidth > 0);
  const div = document.createElement("div");
  div.id = "image-check";
  div.textContent = `loaded=${ok.length} total=${all.length}`;
  document.body.appendChild(div);
});
</script>"""


def workspace(small_runs: Path, here: Path) -> Path:
    for name in ("runs", "submissions"):
        shutil.copytree(small_runs / name, here / name, copy_function=os.link)
    return here


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium (no sandbox: tests may run as root), with its own profile folder."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=180)


@pytest.fixture
def report(small_runs, tmp_path, capsys) -> tuple[Path, dict]:
    workspace(small_runs, tmp_path)
    for name, score in (("run-a", 0.31), ("run-b", 0.36), ("ens", 0.34)):
        record_lb(Path(f"submissions/{name}.csv"), score, None, Path("runs"))
    capsys.readouterr()
    assert main(["report", "--out", "out/report.html", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return Path("out/report.html"), result


def test_report_is_self_contained_and_holds_every_part(report):
    path, result = report
    html = path.read_text()
    assert result["report"] == str(path) and result["runs"] == 3 and result["studies"] == 1
    # nothing is fetched: every src/href is inline data or an anchor in the page
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs
    assert "http://" not in html and "https://" not in html
    sources = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(sources) == result["images"]
    for src in sources:  # every image is a PNG that decodes
        Image.open(io.BytesIO(base64.b64decode(src))).verify()
    # leaderboard, CV-LB, two trained runs with 4 pictures each, the study's plots
    for alt in ("CV against public LB", "learning curves", "per-class IoU", "out-of-fold confusion matrix"):
        assert f'alt="{alt}"' in html
    assert html.count('alt="the 6 worst validation images"') == 2
    for alt in ("optimisation history", "parameter importances", "parallel coordinates"):
        assert f'alt="{alt}"' in html
    assert "Kendall tau (CV vs public LB, 3 scored runs)" in html
    assert "an ensemble: its members are detailed as runs of their own" in html
    for run in ("run-a", "run-b", "ens"):
        assert f"<td>{run}</td>" in html
    assert "<h3>toy</h3>" in html and "8 trials: 8 complete" in html


def test_chromium_renders_it_with_every_image_loaded(report, tmp_path):
    path, result = report
    checked = tmp_path / "checked.html"  # the report plus a script that counts the images that loaded
    checked.write_text(path.read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", checked.resolve().as_uri(), profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<div id="image-check">loaded=(\d+) total=(\d+)</div>', dom.stdout)
    assert found, dom.stdout[-500:]
    assert int(found[1]) == int(found[2]) == result["images"] >= 12

    shot = tmp_path / "shot.png"
    run = chromium(f"--screenshot={shot}", "--window-size=1280,2400", path.resolve().as_uri(), profile=tmp_path / "p2")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50 and pixels.std() > 10  # text, tables and plots, not one flat colour


def test_empty_runs_folder_says_so(tmp_path, capsys):
    Path("runs").mkdir()
    assert main(["report"]) == 0
    html = Path("runs/report.html").read_text()
    assert "no finished runs yet" in html and "no study storage in this runs folder" in html
    assert main(["report", "--runs-dir", "nowhere"]) == 1
    assert "nowhere: no runs folder" in capsys.readouterr().err
