"""One way to read a run's settings: core.runs.read_config validates and upgrades config.json, and every stage
that reads a run folder's settings goes through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from competition.core.config import DEFAULTS, resolve
from competition.core.errors import UserError
from competition.core.runs import read_config

ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, cfg) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_an_older_run_folder_is_upgraded(tmp_path):
    old = resolve(flags={"epochs": 3})
    for newer in ("fc6", "val_tta", "tracker", "oom"):  # settings later than the run
        old.pop(newer)
    old["amp"] = True  # before amp had modes
    cfg = read_config(write_config(tmp_path / "run", old))
    assert cfg["epochs"] == 3 and cfg["amp"] == "auto"
    assert {k: cfg[k] for k in ("fc6", "val_tta", "oom")} == {k: DEFAULTS[k] for k in ("fc6", "val_tta", "oom")}


def test_an_old_runs_text_tracker_mlflow_keeps_tensorboard_and_a_new_runs_list_is_read_as_saved(tmp_path):
    from competition.core.runs import write_config as save

    old = resolve(flags={"epochs": 3})
    old["tracker"] = "mlflow"  # before tracker was a list, mlflow meant TensorBoard + MLflow
    assert read_config(write_config(tmp_path / "old", old))["tracker"] == "tensorboard,mlflow"
    for value in ("mlflow", "tensorboard,wandb", "none"):  # saved by this version: exactly what was chosen
        save(tmp_path / value, resolve(sets=[f"tracker={value}"]))
        assert json.loads((tmp_path / value / "config.json").read_text())["tracker"] == value.split(",")
        assert read_config(tmp_path / value)["tracker"] == value


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "config.json: missing"),
        ("{not json", "config.json: not a readable settings file"),
        ("[1, 2]", "config.json: expected a mapping of settings, got list"),
        (json.dumps({"lr": "fast"}), "config.json: lr='fast': expected a number"),
        (json.dumps({"optimizer": "adamx"}), "config.json: optimizer='adamx'"),
    ],
)
def test_a_missing_or_damaged_config_is_one_user_error_naming_the_file(tmp_path, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "config.json").write_text(content)
    with pytest.raises(UserError, match=message) as caught:
        read_config(run)
    assert caught.value.exit_code == 1 and "\n" not in str(caught.value)


def test_no_stage_reads_config_json_but_through_read_config():
    places = []
    for path in sorted((ROOT / "competition").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if '/ "config.json"' in line:  # a path to a run's config.json
                places.append((str(path.relative_to(ROOT)), number))
    allowed = {"competition/core/runs.py"}  # read_config and write_config
    assert {p for p, _ in places} == allowed, places
