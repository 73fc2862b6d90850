"""The main job's promise (README): on the embedded sample data, the quick FCN space is a region where the network
learns from random init within the quick budget. One fold of the quick profile at the space's centre must get
well above the all-background prior; if the sample data or the space drift, this fails."""

from __future__ import annotations

import math

import models
from competition.core.config import QUICK_PROFILE, resolve
from competition.data import write_sample_dataset
from competition.train import train_run


def centre(space: dict) -> dict:
    """The middle of each range (geometric for log ranges) and the first choice of each categorical."""
    point = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            point[key] = spec["choices"][0]
        elif spec.get("log"):
            point[key] = math.sqrt(spec["low"] * spec["high"])
        else:
            point[key] = (spec["low"] + spec["high"]) / 2
    return point


def test_quick_fcn_space_learns_on_the_sample_data(tmp_path):
    spec = models.get_spec("fcn16s")
    root = write_sample_dataset(tmp_path / "sample")  # the embedded sample exactly as the main job uses it
    cfg = resolve(spec.defaults, flags={**QUICK_PROFILE, **centre(spec.quick_space), "fold": 0})
    cfg.update(model="fcn16s", data=str(root), overlays=0, save_oof=False)
    result = train_run(cfg, tmp_path / "runs" / "quick")
    assert not result["background_only"], result
    assert result["miou_dataset"] >= 0.3, result  # the background-only prior is 0.038 (README)
