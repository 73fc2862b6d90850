"""The dense CRF step of the post-processing (predict.crf, ensemble.postcrf): pydensecrf2 applied as by hand,
fitted out of fold, applied to the test set from a file, and a clear refusal where pydensecrf2 is missing."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from competition.cli import main
from competition.predict import EPS, CrfParams, Decision, argmax, crf_available, crf_confusions, read_probs
from competition.predict import crf as crf_module
from competition.submit import read_submission, submission_values

needs_crf = pytest.mark.skipif(
    not crf_available() and not os.environ.get("COMPETITION_REQUIRE_CRF"),
    reason="pydensecrf2 is not installed (./run.sh setup builds it; CI requires it)",
)
PARAMS = CrfParams(sxy=20, srgb=10, compat=6)


def test_pydensecrf_is_installed_where_required():
    if os.environ.get("COMPETITION_REQUIRE_CRF"):
        assert crf_available(), "COMPETITION_REQUIRE_CRF is set but pydensecrf2 does not import"


def by_hand(scores: np.ndarray, image: np.ndarray, p: CrfParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    c, h, w = scores.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(-scores.reshape(c, -1)))
    d.addPairwiseGaussian(sxy=p.gauss_sxy, compat=p.gauss_compat)
    d.addPairwiseBilateral(sxy=p.sxy, srgb=p.srgb, rgbim=np.ascontiguousarray(image), compat=p.compat)
    return np.array(d.inference(p.iterations)).reshape(c, h, w)


def noisy_block(seed: int = 0, b: int = 3, side: int = 64):
    """Two flat colour halves, probabilities right on average with salt noise: the CRF should clean them."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((b, side, side), np.uint8)
    truth[:, :, side // 2 :] = 1
    images = np.where(truth[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, -1)
    probs = np.full((b, 3, side, side), 0.1, np.float32)
    noisy = rng.random((b, side, side)) < 0.25
    label = np.where(noisy, 1 - truth, truth)
    for c in (0, 1):
        probs[:, c][label == c] = 0.8
    return probs / probs.sum(1, keepdims=True), images, truth


@needs_crf
def test_the_decision_applies_pydensecrf_as_by_hand_in_any_number_of_processes():
    probs, images, truth = noisy_block()
    offsets = (0.0, 0.3, -0.5)
    decision = Decision(("bg", "a", "b"), offsets, crf=PARAMS)
    scores = np.log(probs + EPS) + np.array(offsets, np.float32)[None, :, None, None]
    q = np.stack([by_hand(s, im, PARAMS) for s, im in zip(scores, images, strict=True)])
    assert np.array_equal(decision.masks(probs, images), argmax(q, 1))
    assert np.array_equal(
        crf_module.refine(scores, images, PARAMS, jobs=1), crf_module.refine(scores, images, PARAMS, 2)
    )
    # the CRF does what it is for: the salt noise is cleaned where the colours agree with the truth
    assert (decision.masks(probs, images) == truth).mean() > (argmax(probs, 1) == truth).mean() + 0.15
    # the fitting path counts exactly the decisions the application makes
    grid = (PARAMS, CrfParams(40, 13, 10))
    cms = crf_confusions(scores, images, truth, grid, ignore=255, jobs=2)
    for g, p in enumerate(grid):
        pred = argmax(crf_module.refine(scores, images, p, jobs=1), 1)
        for i in range(len(truth)):
            want = np.bincount(truth[i].ravel().astype(np.int64) * 3 + pred[i].ravel(), minlength=9).reshape(3, 3)
            assert np.array_equal(cms[i, g], want)
    with pytest.raises(ValueError, match="needs the images"):
        decision.masks(probs)


@pytest.fixture
def runs(small_runs, tmp_path):
    shutil.copytree(small_runs / "runs" / "run-a", tmp_path / "runs" / "run-a")
    return tmp_path / "runs"


def grid_image(path) -> np.ndarray:
    """An image resized to the 256 grid independently of the harness's cache: PIL RGB, torchvision resize."""
    pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    return F.resize(pixels, [256, 256], antialias=True).permute(1, 2, 0).numpy()


@needs_crf
def test_a_decision_with_a_crf_is_applied_to_the_test_set_as_by_hand(runs, tmp_path, capsys):
    from competition.core.runs import read_config
    from competition.data import DataRoot
    from competition.predict import run_classes

    names = json.loads((runs / "run-a" / "run.json").read_text())["classes"]
    n = len(names)
    post = {"version": 1, "classes": names, "offsets": [0.0] + [0.5] * (n - 1), "min_area": None,
            "crf": PARAMS.to_dict(), "eps": EPS, "report": {}}  # fmt: skip
    (tmp_path / "post.json").write_text(json.dumps(post))
    argv = ["predict", "run-a", "--runs-dir", str(runs), "--post", str(tmp_path / "post.json"), "--json"]
    assert main([*argv, "--name", "a-crf"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = read_config(runs / "run-a")
    root = DataRoot(cfg["data"])
    classes = run_classes(runs / "run-a", cfg, root)
    probs = read_probs(runs / "run-a" / "test" / "probs.npy").probabilities()
    test = root.coco("test").images
    scores = np.log(probs + EPS) + np.array(post["offsets"], np.float32)[None, :, None, None]
    q = np.stack([by_hand(s, grid_image(root.root / im.file_name), PARAMS) for s, im in zip(scores, test, strict=True)])
    want = submission_values(classes, root.classes())[argmax(q, 1)]
    got = read_submission(result["csv"], [im.file_name for im in test], root.classes().num_classes)
    assert np.array_equal(got, want)
    sidecar = json.loads(open(result["csv"][: -len(".csv")] + ".json").read())
    assert sidecar["post"]["crf"] == PARAMS.to_dict()
    assert main(["check", result["csv"], "--data", cfg["data"]]) == 0


@needs_crf
def test_post_auto_fits_the_crf_out_of_fold_and_reports_every_candidate(runs, capsys):
    assert main(["predict", "run-a", "--runs-dir", str(runs), "--post", "auto", "--name", "a-auto"]) == 0
    out = capsys.readouterr()
    assert "dense CRF:" in out.out + out.err
    saved = json.loads((runs / "run-a" / "postprocess.json").read_text())
    step = saved["report"]["crf"]
    assert {"gain", "se", "kept", "grid", "grid_miou", "half_fits", "fitted", "per_class_after"} <= set(step)
    assert len(step["grid"]) == len(crf_module.GRID) and len(step["grid_miou"]) == len(step["bases"])
    assert all(len(values) == len(crf_module.GRID) for values in step["grid_miou"])
    if saved["report"]["calibration"]["kept"]:  # the CRF is tried on the plain scores too
        assert step["bases"] == ["the decision so far", "the plain argmax"]
    if step["kept"] and step["fitted_on"] == "the plain argmax":
        assert saved["offsets"] is None and "dropped" in saved["report"]["calibration"]
    assert step["images"] == saved["report"]["images"]  # 12 images: all of them fitted
    assert (saved["crf"] is not None) == step["kept"]
    assert saved["report"]["steps"] == ["calibration", "crf", "cleanup"]
    from tests.conftest import child_processes

    assert not [c for c in child_processes("multiprocessing") if "resource_tracker" not in c]  # the CRF's ended


def test_without_pydensecrf_auto_says_so_and_a_crf_file_or_step_is_refused(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(crf_module, "available", lambda: False)
    monkeypatch.setattr("competition.ensemble.postcrf.crf_available", lambda: False)
    monkeypatch.setattr("competition.ensemble.postfit.crf_available", lambda: False)
    args = ["predict", "run-a", "--runs-dir", str(runs)]
    assert main([*args, "--post", "auto", "--name", "a-nocrf"]) == 0
    out = capsys.readouterr()
    assert "dense CRF: not fitted: pydensecrf2 is not installed" in out.out + out.err
    saved = json.loads((runs / "run-a" / "postprocess.json").read_text())
    assert saved["crf"] is None and "skipped" in saved["report"]["crf"]
    assert main([*args, "--post", "auto:calibration,crf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pydensecrf2" in err and len(err.splitlines()) == 1
    names = saved["classes"]
    post = {"version": 1, "classes": names, "offsets": None, "min_area": None, "crf": PARAMS.to_dict(), "eps": EPS}
    (tmp_path / "post.json").write_text(json.dumps(post))
    before = sorted(p.name for p in (tmp_path / "submissions").glob("*"))
    assert main([*args, "--post", str(tmp_path / "post.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert "pydensecrf2" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "submissions").glob("*")) == before  # nothing written


@pytest.mark.parametrize("spec, code", [("auto:bogus", 2), ("auto:", 2)], ids=["unknown-step", "no-step"])
def test_a_bad_post_step_list_is_a_usage_error(spec, code, runs, capsys):
    assert main(["predict", "run-a", "--runs-dir", str(runs), "--post", spec]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "calibration" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("crf", [{"sxy": 1}, {**PARAMS.to_dict(), "compat": -1}, "strong"])
def test_a_bad_crf_entry_is_one_line_naming_the_file(crf, runs, tmp_path, capsys):
    names = json.loads((runs / "run-a" / "run.json").read_text())["classes"]
    post = {"version": 1, "classes": names, "offsets": None, "min_area": None, "crf": crf, "eps": EPS}
    (tmp_path / "post.json").write_text(json.dumps(post))
    assert main(["predict", "run-a", "--runs-dir", str(runs), "--post", str(tmp_path / "post.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert "post.json" in err and "crf" in err and len(err.splitlines()) == 1


def test_auto_with_named_steps_fits_only_those(runs, capsys):
    assert main(["predict", "run-a", "--runs-dir", str(runs), "--post", "auto:calibration", "--name", "a-cal"]) == 0
    capsys.readouterr()
    saved = json.loads((runs / "run-a" / "postprocess.json").read_text())
    assert saved["report"]["steps"] == ["calibration"]
    assert saved["crf"] is None and saved["min_area"] is None
    for step in ("crf", "cleanup"):
        assert saved["report"][step] == {"kept": False, "skipped": "not asked for"}
    assert "gain" in saved["report"]["calibration"]
