"""Post-processing (predict.decide, ensemble.postfit): class calibration for mIoU and small-region cleanup,
fitted out of fold, applied identically to the test set."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from competition.cli import main
from competition.data import build_class_table
from competition.ensemble.noise import metric_value
from competition.ensemble.postfit import confusion, fit_areas, fit_offsets, image_confusion
from competition.predict import EPS, Decision, argmax, cleanup, read_probs
from competition.submit import read_submission, submission_values

CLASSES = build_class_table([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "rare"}])


def test_plain_decision_is_the_argmax_and_offsets_are_added_to_log_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(2, 8, 8)).transpose(0, 3, 1, 2).astype(np.float32)
    names = tuple(CLASSES.names)
    assert np.array_equal(Decision(names).masks(probs), argmax(probs, 1))
    offsets = (0.0, -0.5, 0.25, 1.0)
    by_hand = np.argmax(np.log(probs + EPS) + np.array(offsets)[None, :, None, None], axis=1)
    assert np.array_equal(Decision(names, offsets).masks(probs), by_hand)


def test_cleanup_gives_small_regions_to_the_best_other_class_and_keeps_the_grid():
    mask = np.zeros((256, 256), np.uint8)
    mask[10:12, 10:12] = 1  # 4 pixels of class 1: small
    mask[100:140, 100:140] = 1  # 1,600 pixels: large
    mask[200:203, 50:53] = 3  # 9 pixels of class 3
    scores = np.zeros((4, 256, 256), np.float32)
    scores[2] = 0.5  # the best class after the decided one is 2 everywhere
    out = cleanup(mask, scores, (0, 10, 0, 5))
    assert out.shape == (256, 256) and out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 2, 3}
    assert (out[10:12, 10:12] == 2).all() and (out[100:140, 100:140] == 1).all()
    assert (out[200:203, 50:53] == 3).all()  # 9 pixels >= its minimum 5: kept
    assert np.array_equal(cleanup(mask, scores, (0, 0, 0, 0)), mask)


def under_predicted(seed: int = 0, n: int = 24, p: int = 400):
    """Sampled log-probabilities where the rare class (3) is right but scored a little below background."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(4, size=(n, p), p=[0.6, 0.2, 0.15, 0.05]).astype(np.uint8)
    probs = np.full((n, 4, p), 0.05, np.float32)
    for c in range(4):
        probs[:, c][truth == c] = 0.85
    rare = truth == 3
    probs[:, 3][rare], probs[:, 0][rare] = 0.4, 0.5  # the argmax calls every rare pixel background
    return np.log(probs + EPS), truth


@pytest.mark.parametrize("metric", ["image", "dataset"])
def test_calibration_never_lowers_the_score_it_was_fitted_on(metric):
    def value(scores, truth, offsets):
        n, _, p = scores.shape
        pred = argmax(scores + np.asarray(offsets, np.float32)[None, :, None], 1).reshape(-1)
        return metric_value(confusion(np.repeat(np.arange(n), p), truth.reshape(-1), pred, n, 4, 255), metric)

    for seed in range(3):
        scores, truth = under_predicted(seed)
        offsets = fit_offsets(scores, truth, CLASSES, metric)
        fitted, plain = value(scores, truth, offsets), value(scores, truth, np.zeros(4))
        assert fitted >= plain - 1e-12
        assert offsets[0] == 0 and offsets[3] > 0  # background is the reference; the rare class moves up
        assert fitted > plain + 0.05  # the rare class is found


def brute_offsets(scores, truth, metric):
    """Coordinate ascent the slow way: every grid value of every class scored by a full argmax."""
    from competition.ensemble.postfit import GRID

    n, c, p = scores.shape
    img = np.repeat(np.arange(n), p)
    offsets = np.zeros(c, np.float32)
    grid = np.sort(GRID).astype(np.float32)
    for _ in range(2):
        for k in range(1, c):
            if not (truth == k).any():
                continue
            values = []
            for g in grid:
                trial = offsets.copy()
                trial[k] = g
                pred = argmax(scores + trial[None, :, None], 1).reshape(-1)
                values.append(metric_value(confusion(img, truth.reshape(-1), pred, n, c, 255), metric))
            offsets[k] = grid[max(range(len(grid)), key=lambda j: (round(values[j], 9), -abs(float(grid[j]))))]
    return offsets


@pytest.mark.parametrize("metric", ["image", "dataset"])
def test_binned_coordinate_ascent_equals_the_brute_force_one(metric):
    scores, truth = under_predicted(seed=4, n=10, p=300)
    rng = np.random.default_rng(1)
    scores = (scores + rng.normal(0, 0.6, scores.shape)).astype(np.float32)  # ties and near-ties everywhere
    assert np.array_equal(fit_offsets(scores, truth, CLASSES, metric), brute_offsets(scores, truth, metric))


@pytest.mark.parametrize("metric", ["image", "dataset"])
def test_the_numpy_ranking_values_equal_the_scorer(metric):
    from competition.ensemble.postfit import ranking_values

    rng = np.random.default_rng(2)
    cms = rng.integers(0, 6, (3, 20, 5, 5)) * (rng.random((3, 20, 5, 5)) < 0.3)
    cms[0, 4] = 0  # an image without a scored pixel
    assert np.allclose(ranking_values(cms, metric), [metric_value(cm, metric) for cm in cms], rtol=0, atol=1e-12)


def test_a_class_without_pixels_keeps_offset_zero():
    scores, truth = under_predicted()
    truth[truth == 2] = 1  # class 2 never occurs
    assert fit_offsets(scores, truth, CLASSES, "image")[2] == 0


def test_fitted_areas_are_exact_updates_of_the_confusion():
    """fit_areas' region bookkeeping against the real cleanup on one image with a spurious speck."""
    from competition.ensemble.postfit import Regions

    truth = np.zeros((256, 256), np.uint8)
    truth[50:90, 50:90] = 1
    pred = truth.copy()
    pred[5:7, 5:7] = 1  # a 4-pixel false positive
    cm = image_confusion(truth, pred, 4, 255)[None]
    # regions of class 1: the speck (4 px, truth 0, alternative 0) and the square (1600 px, truth 1, alt 0)
    regions = Regions(np.array([0, 0]), np.array([1, 1]), np.array([4, 1600]),
                      np.array([0, 1]), np.array([0 * 4 + 0, 1 * 4 + 0]), np.array([4, 1600]))  # fmt: skip
    areas = fit_areas(regions, cm, np.ones(1, bool), "image")
    assert 4 < areas[1] <= 1600
    scores = np.zeros((4, 256, 256), np.float32)
    scores[0] = 0.1
    cleaned = cleanup(pred, scores, tuple(int(a) for a in areas))
    assert np.array_equal(cleaned, truth)
    assert np.array_equal(
        image_confusion(truth, cleaned, 4, 255)[None], cm + regions.delta(np.array([True, False]), 1, 4)
    )


@pytest.fixture
def runs(small_runs, tmp_path):
    """Copies of run-a and run-b (trained, predicted) and the sample data they were trained on."""
    for name in ("run-a", "run-b"):
        shutil.copytree(small_runs / "runs" / name, tmp_path / "runs" / name)
    return tmp_path / "runs"


def test_predict_post_auto_fits_saves_and_applies_it_as_by_hand(runs, tmp_path, capsys):
    assert main(["predict", "run-a", "--runs-dir", str(runs), "--post", "auto", "--name", "a-post", "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    assert "post-processing:" in out.err + out.out and "held-out gain" in out.err + out.out
    saved = json.loads((runs / "run-a" / "postprocess.json").read_text())
    assert set(saved["report"]) >= {"before", "after", "calibration", "cleanup"}
    for step in ("calibration", "cleanup"):
        assert {"gain", "se", "kept", "per_class_before", "per_class_after"} <= set(saved["report"][step])
    sidecar = json.loads((tmp_path / "submissions" / "a-post.json").read_text())
    assert sidecar["post"]["offsets"] == saved["offsets"] and sidecar["post"]["min_area"] == saved["min_area"]
    from competition.core.runs import read_config
    from competition.data import DataRoot
    from competition.predict import read_decision, run_classes

    cfg = read_config(runs / "run-a")
    root = DataRoot(cfg["data"])
    classes = run_classes(runs / "run-a", cfg, root)
    decision = read_decision(runs / "run-a" / "postprocess.json", classes.names)
    stored = read_probs(runs / "run-a" / "test" / "probs.npy")
    by_hand = submission_values(classes, root.classes())[decision.masks(stored.probabilities())]
    ids = [im.file_name for im in root.coco("test").images]
    assert np.array_equal(read_submission(result["csv"], ids, root.classes().num_classes), by_hand)
    assert main(["check", result["csv"], "--data", cfg["data"]]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "--runs-dir", str(runs), "--json"]) == 0  # OOF before (CV) and after (post)
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
    assert rows["run-a"]["post_miou"] == pytest.approx(saved["report"]["after"])
    assert rows["run-b"]["post_miou"] is None


def test_a_decision_with_offsets_and_cleanup_is_applied_from_a_file(runs, tmp_path, capsys):
    from competition.core.runs import read_config

    names = json.loads((runs / "run-a" / "run.json").read_text())["classes"]
    n = len(names)
    post = {"version": 1, "classes": names, "offsets": [0.0] + [0.7] * (n - 1), "min_area": [0] + [64] * (n - 1),
            "eps": EPS, "report": {}}  # fmt: skip
    (tmp_path / "post.json").write_text(json.dumps(post))
    args = ["predict", "run-a", "--runs-dir", str(runs), "--post", str(tmp_path / "post.json"), "--json"]
    assert main([*args, "--name", "a-file"]) == 0
    csv = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["csv"]
    assert main(["predict", "run-a", "--runs-dir", str(runs), "--name", "a-plain", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["csv"]
    data = read_config(runs / "run-a")["data"]
    assert main(["check", csv, "--data", data]) == 0
    assert open(csv).read() != open(plain).read()  # the offsets moved pixels


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "classes": ["x"]}', "[]"])
def test_a_bad_post_file_is_one_line(content, runs, tmp_path, capsys):
    (tmp_path / "post.json").write_text(content)
    assert main(["predict", "run-a", "--runs-dir", str(runs), "--post", str(tmp_path / "post.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "post.json" in err and len(err.splitlines()) == 1


def test_ensemble_post_auto_records_it(runs, tmp_path, capsys):
    argv = ["ensemble", "run-a", "run-b", "--runs-dir", str(runs), "--name", "ens-post", "--post", "auto", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (runs / "ens-post" / "postprocess.json").is_file()
    assert "post" in result and result["post_oof_miou"] is not None
    results = json.loads((runs / "ens-post" / "results.json").read_text())
    assert results["post_oof_miou"] == result["post_oof_miou"]
