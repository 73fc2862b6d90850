"""Pseudo-labels: a run's test probabilities become a labelled set that joins the training part of every fold;
no validation image or pixel leaks in."""

from __future__ import annotations

import json

import numpy as np
import pytest

from competition.cli import main
from competition.core.config import resolve
from competition.core.errors import UserError
from competition.data import PseudoLabels, write_sample_dataset
from competition.predict.probs import read_probs
from competition.train.setup import loaders, prepare

TINY = ["--folds", "2", "--epochs", "1", "--batch-size", "2", "--image-size", "32", "--set", "encoder=resnet18",
        "--set", "num_workers=0", "--set", "overlays=0", "--set", "encoder_weights=null"]  # fmt: skip


def cli_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_pseudo_labels_join_training_folds_only(tmp_path, capsys):
    root = write_sample_dataset(tmp_path / "sample", n_train=10, n_test=4, size=40)
    runs = tmp_path / "runs"
    run = cli_json(capsys, "train", "unet", "--data", str(root), "--runs-dir", str(runs), *TINY)["run"]
    cli_json(capsys, "predict", run, "--runs-dir", str(runs))
    made = cli_json(capsys, "pseudo-label", run, "--runs-dir", str(runs), "--threshold", "0.3", "--name", "p")
    assert made["set"] == "pseudo=p" and made["images"] == 4

    probs = read_probs(runs / run / "test" / "probs.npy").probabilities()  # the labels, computed independently
    top = probs.max(1)
    expected = np.where(top >= 0.3, probs.argmax(1), 255)
    labels = np.load(runs / "pseudo" / "p" / "labels.npy")
    assert (labels == expected).all() and made["kept"] == pytest.approx((top >= 0.3).mean())

    cfg = {**resolve(flags={"folds": 2, "image_size": 32}), "model": "unet", "data": str(root), "pseudo": "p"}
    setup = prepare(cfg, runs, lambda m: None)
    test_names = {im.file_name for im in setup.pseudo.images}
    for fold in range(2):
        train_loader, val_loader, val_set = loaders(setup, fold)
        train_parts = train_loader.dataset.datasets
        assert [im.id for im in train_parts[0].images] == setup.folds.train_ids(fold)
        assert {im.file_name for im in train_parts[1].images} == test_names  # every pseudo image trains
        assert [im.id for im in val_set.images] == list(setup.folds.val_ids[fold])  # validation untouched
        assert not test_names & {im.file_name for im in val_set.images}
    image, mask = train_parts[1][0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)

    code = main(["train", "unet", "--data", str(root), "--runs-dir", str(runs), *TINY, "--set", "pseudo=p"])
    assert code == 0 and "4 test images of p join every training fold" in capsys.readouterr().out


def test_a_pseudo_set_holding_training_images_is_refused(tmp_path):
    root = write_sample_dataset(tmp_path / "sample", n_train=10, n_test=4, size=40)
    folder = tmp_path / "runs" / "pseudo" / "bad"
    folder.mkdir(parents=True)
    train_image = json.loads((root / "train_all.json").read_text())["images"][0]
    meta = {"classes": ["background"], "data": str(root), "source": str(root / "test.json"),
            "images": [[train_image["id"], train_image["file_name"], 40, 40]]}  # fmt: skip
    (folder / "pseudo.json").write_text(json.dumps(meta))
    np.save(folder / "labels.npy", np.zeros((1, 256, 256), np.uint8))
    store = PseudoLabels(folder)
    from competition.data import DataRoot

    data = DataRoot(root)
    names = list(data.classes().names)
    with pytest.raises(UserError, match="labels of classes"):
        store.check(names, data.coco("train_all"))
    store.meta["classes"] = names
    with pytest.raises(UserError, match="1 images are also in train_all.json"):
        store.check(names, data.coco("train_all"))
    with pytest.raises(UserError, match="no pseudo-labelled set here"):
        PseudoLabels(tmp_path / "nothing")
