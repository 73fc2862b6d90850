"""Compact probabilities (uint8, old float16 files still read), exact out-of-fold scoring on the disagreement
pixels, greedy selection against a brute-force greedy, and the held-out noise guard of `--weights auto`.

Synthetic probabilities: no training, a few 256x256 images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from competition.core.fileio import write_json
from competition.data import ImageInfo
from competition.ensemble.greedy import greedy
from competition.ensemble.member_weights import choose, halves
from competition.ensemble.members import OofProbs
from competition.ensemble.noise import gain, metric_value
from competition.ensemble.pixels import read_pixels
from competition.predict import argmax, coefficients, mix, quantise, read_probs, write_probs
from competition.predict.probs import quantise_tensor
from competition.submit import per_image_confusion

C = 5
IGNORE = 255


def quiet(_: str) -> None:
    pass


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def synthetic(n: int, members: int, seed: int = 0, skill: tuple[float, ...] | None = None, own: float = 0.5):
    """Truth [n, 256, 256] (blocky classes, some ignored pixels) and members' probabilities [n, C, 256, 256]
    that share a signal towards the truth (so they mostly agree) plus their own noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, C, (n, 16, 16))
    truth = coarse.repeat(16, 1).repeat(16, 2).astype(np.uint8)
    truth[:, :8, :8] = IGNORE
    onehot = np.eye(C, dtype=np.float32)[np.minimum(truth, C - 1)].transpose(0, 3, 1, 2)
    shared = rng.normal(0, 1, (n, C, 256, 256)).astype(np.float32)
    skill = skill or (2.0,) * members
    probs = [softmax(s * onehot + shared + rng.normal(0, own, shared.shape)) for s in skill]
    return truth, probs


def store(tmp_path, name: str, probs: np.ndarray, names: list[str], old: bool = False):
    """Probabilities written by the current writer, or as float16 exactly as earlier versions wrote them."""
    path = tmp_path / f"{name}.npy"
    if old:
        np.save(path, probs.astype(np.float16))
        manifest = {"images": names, "classes": [str(c) for c in range(C)], "shape": list(probs.shape)}
        write_json(path.with_suffix(".json"), {**manifest, "dtype": "float16"})
    else:
        writer = write_probs(path, names, [str(c) for c in range(C)])
        writer.write(probs[: len(probs) // 2])
        writer.write(torch.from_numpy(probs[len(probs) // 2 :]))
        writer.close()
    return read_probs(path)


def as_oof(stored, names: list[str]) -> OofProbs:
    """One member's out-of-fold probabilities split over two fold files (odd and even images)."""
    return OofProbs(stored, {n: (i % 2, i // 2) for i, n in enumerate(names)}, [str(c) for c in range(C)])


def members_oof(tmp_path, probs: list[np.ndarray], old: tuple[int, ...] = ()) -> list[OofProbs]:
    names = [f"im{i}.jpg" for i in range(len(probs[0]))]
    oofs = []
    for k, p in enumerate(probs):
        folds = [store(tmp_path, f"m{k}f{f}", p[f::2], names[f::2], old=k in old) for f in (0, 1)]
        oofs.append(as_oof(folds, names))
    return oofs


def images(n: int) -> list[ImageInfo]:
    return [ImageInfo(i, f"im{i}.jpg", 256, 256) for i in range(n)]


def brute_confusion(oofs: list[OofProbs], truth: np.ndarray, weights) -> np.ndarray:
    """Per-image confusion of the mixture's argmax over every pixel (no shortcut)."""
    names = [f"im{i}.jpg" for i in range(len(truth))]
    coefs = coefficients(weights, [o.unit for o in oofs])
    pred = argmax(mix([o.block(names) for o in oofs], coefs), 1)
    return per_image_confusion(torch.from_numpy(pred), torch.from_numpy(truth), C, IGNORE).numpy()


def test_probabilities_are_stored_in_half_the_bytes_and_old_float16_files_load(tmp_path):
    _, (probs,) = synthetic(4, 1)
    names = [f"im{i}.jpg" for i in range(4)]
    new, old = store(tmp_path, "new", probs, names), store(tmp_path, "old", probs, names, old=True)
    assert new.array.dtype == np.uint8 and old.array.dtype == np.float16 and new.unit == 1 / 255 and old.unit == 1
    assert new.path.stat().st_size <= old.path.stat().st_size / 2 + 256  # + the .npy header
    assert np.abs(new.probabilities() - probs).max() <= 1.5 / 255 + 1e-6  # top class: at most one level up
    assert (np.abs(new.probabilities() - probs) > 0.5 / 255 + 1e-6).mean() < 1e-3
    np.testing.assert_array_equal(new.array.argmax(1), probs.argmax(1))  # the argmax is kept exactly
    flat = np.full((1, C, 1, 3), 0.2, np.float32)  # exact ties keep the first class
    flat[0, 3, 0, 1] += 1e-4  # a tie after rounding: class 3 must stay on top
    np.testing.assert_array_equal(quantise(flat).argmax(1), flat.argmax(1))
    np.testing.assert_array_equal(quantise_tensor(torch.from_numpy(flat)), quantise(flat))
    np.testing.assert_array_equal(old.probabilities(), probs.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(quantise(torch.from_numpy(probs)), quantise(probs))
    np.testing.assert_array_equal(quantise_tensor(torch.from_numpy(probs)), quantise(probs))  # the CUDA path


def test_argmax_keeps_the_first_of_ties_like_numpy():
    x = np.random.default_rng(0).integers(0, 4, (3, 7, 50)).astype(np.uint8)  # many ties
    np.testing.assert_array_equal(argmax(x, 1), x.argmax(1))
    np.testing.assert_array_equal(argmax(x, 0), x.argmax(0))


@pytest.mark.parametrize("old", [(), (1,)])
def test_scores_from_disagreement_pixels_equal_scoring_every_pixel(tmp_path, old):
    truth, probs = synthetic(6, 3, seed=1)
    oofs = members_oof(tmp_path, probs, old)
    pixels = read_pixels(oofs, images(6), dict(enumerate(truth)), C, IGNORE, halves(6), quiet)
    n_valid = (truth != IGNORE).sum()
    assert 0 < sum(p.size for p in pixels.parts) < 0.5 * n_valid  # the members mostly agree
    for weights in (np.eye(3)[1], [0.25, 0.25, 0.5], [0.2, 0.5, 0.3], np.full(3, 1 / 3)):
        np.testing.assert_array_equal(pixels.confusion(np.asarray(weights)), brute_confusion(oofs, truth, weights))
    for k in range(3):
        np.testing.assert_array_equal(pixels.member_confusion(k), brute_confusion(oofs, truth, np.eye(3)[k]))
    half = pixels.confusion(np.full(3, 1 / 3), [1])
    assert (half[pixels.part_of == 0] == 0).all() and half[pixels.part_of == 1].sum() > 0


def naive_greedy(oofs, truth, part_of, part, metric, start, steps):
    """Greedy selection re-scoring every pixel of the part for every candidate (integer sums)."""
    counts = np.zeros(len(oofs), np.int64)
    counts[start] = 1
    mask = (part_of == part)[:, None, None]
    score = metric_value(np.where(mask, brute_confusion(oofs, truth, counts), 0), metric)
    for _ in range(steps):
        trials = [counts + np.eye(len(oofs), dtype=np.int64)[k] for k in range(len(oofs))]
        values = [metric_value(np.where(mask, brute_confusion(oofs, truth, t * 255), 0), metric) for t in trials]
        k = int(np.argmax(values))
        if values[k] <= score:
            break
        counts, score = trials[k], values[k]
    return counts


@pytest.mark.parametrize("metric", ["image", "dataset"])
def test_greedy_selection_matches_a_brute_force_greedy(tmp_path, metric):
    truth, probs = synthetic(8, 3, seed=2, skill=(2.0, 2.0, 1.5), own=1.5)
    oofs = members_oof(tmp_path, probs)
    part_of = halves(8)
    pixels = read_pixels(oofs, images(8), dict(enumerate(truth)), C, IGNORE, part_of, quiet)
    for part in (0, 1):
        fast = greedy(pixels, part, metric, start=2, steps=6)
        np.testing.assert_array_equal(fast, naive_greedy(oofs, truth, part_of, part, metric, 2, 6))
        assert fast.sum() > 1  # it added members


def test_jackknife_error_of_per_image_miou_is_the_paired_standard_error():
    a, b = np.random.default_rng(3).integers(0, 50, (2, 30, C, C))

    def image_miou(cm: np.ndarray) -> float:
        tp = np.diag(cm)
        return float(np.nanmean(tp / (cm.sum(0) + cm.sum(1) - tp)))

    diff = np.array([image_miou(x) - image_miou(y) for x, y in zip(a, b, strict=True)])
    result = gain(a, b, "image")
    assert result.gain == pytest.approx(diff.mean())
    assert result.se == pytest.approx(diff.std(ddof=1) / np.sqrt(len(diff)))
    assert gain(a, a, "dataset").gain == 0 and gain(a, a, "dataset").se == 0
    assert gain(a, b, "dataset").gain == pytest.approx(metric_value(a, "dataset") - metric_value(b, "dataset"))


def test_auto_keeps_equal_weights_for_equal_members_and_drops_a_useless_one(tmp_path):
    truth, probs = synthetic(12, 2, seed=4)
    same = members_oof(tmp_path / "same", [probs[0], probs[0], probs[0]])
    pixels = read_pixels(same, images(12), dict(enumerate(truth)), C, IGNORE, halves(12), quiet)
    weights, report = choose(pixels, "image", quiet)
    assert report["method"] == "equal" and np.allclose(weights, 1 / 3)
    noise = softmax(np.random.default_rng(5).normal(0, 3, probs[0].shape))  # knows nothing of the truth
    mixed = members_oof(tmp_path / "mixed", [probs[0], noise, probs[1]])
    pixels = read_pixels(mixed, images(12), dict(enumerate(truth)), C, IGNORE, halves(12), quiet)
    weights, report = choose(pixels, "image", quiet)
    assert report["method"] != "equal" and weights[1] < 0.2
    assert report["gains"]["best member - equal"]["gain"] > 0
    assert set(report["heldout_miou"]) == {"equal", "best member", "greedy"}
