"""Training: config layering, losses, schedules, a one-batch overfit, a 2-fold run end to end, resume, leaderboard."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import models
from competition.cli import main
from competition.core.config import DEFAULTS, resolve
from competition.core.errors import UserError
from competition.core.geometry import resize_nearest
from competition.core.lossspec import parse_loss
from competition.data import DataRoot, make_folds, write_sample_dataset
from competition.predict import read_probs
from competition.submit import MeanIoU
from competition.train import MixedLoss, train_run
from competition.train.optim import lr_factor

TINY = {"image_size": 32, "epochs": 2, "folds": 2, "batch_size": 4, "num_workers": 0, "encoder": "resnet18"}


@pytest.fixture
def sample_root(tmp_path):
    return write_sample_dataset(tmp_path / "sample", n_train=12, n_test=4, size=48)


def tiny_cfg(root, model="unet", **overrides):
    cfg = resolve(models.get_spec(model).defaults, flags={**TINY, **overrides})
    cfg.update(model=model, data=str(root), overlays=1)
    return cfg


def test_config_layers(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("lr: 0.01\nepochs: 7\nclasses:\n  UNKNOWN: ignore\n")
    cfg = resolve({"lr": 0.5, "encoder": "resnet18"}, config, ["epochs=9", "classes.Glass=keep"], {"epochs": 11})
    assert cfg["encoder"] == "resnet18"  # model default over harness default
    assert cfg["lr"] == 0.01  # file over model default
    assert cfg["epochs"] == 11  # flag over --set over file
    assert cfg["classes"] == {"UNKNOWN": "ignore", "Glass": "keep"}
    assert cfg["batch_size"] == DEFAULTS["batch_size"]
    with pytest.raises(UserError, match="did you mean 'epochs'"):
        resolve(sets=["epoch=3"])
    with pytest.raises(UserError, match="optimizer"):
        resolve(sets=["optimizer=rmsprop"])


def test_loss_mixes():
    assert parse_loss("0.7*ce+0.3*dice") == [(0.7, "ce"), (0.3, "dice")]
    assert parse_loss("ce+lovasz") == [(1.0, "ce"), (1.0, "lovasz")]
    with pytest.raises(UserError, match="loss"):
        parse_loss("ce+hinge")
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, 0, 0] = 255
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert torch.isclose(MixedLoss("ce")(logits, target), ce)
    mixed = MixedLoss("0.5*ce+2*dice")(logits, target)
    dice = MixedLoss("dice")(logits, target)
    assert torch.isclose(mixed, 0.5 * ce + 2 * dice)
    for name in ("focal", "lovasz"):
        assert torch.isfinite(MixedLoss(name)(logits, target))


def test_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)  # linear warmup
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "cosine") < 0.01
    assert lr_factor(50, 100, 0, "poly") == pytest.approx(0.5**0.9)
    assert lr_factor(50, 100, 0, "none") == 1.0


def test_one_batch_overfit(sample_root):
    """The training step learns: a small model memorises one batch to a high mIoU."""
    torch.manual_seed(0)
    data = DataRoot(sample_root)
    classes = data.classes()
    store = data.masks("train_all", classes)
    coco = data.coco("train_all")
    images = [im for im in coco.images if im.height == im.width][:4]
    from competition.data import SegmentationDataset, eval_transform

    cfg = resolve(flags={"image_size": 32})
    ds = SegmentationDataset(sample_root, coco.path, images, store, eval_transform(cfg), "eval")
    x = torch.stack([ds[i][0] for i in range(4)])
    y = torch.stack([torch.from_numpy(resize_nearest(store[im.id], 32).astype(np.int64)) for im in images])
    model, _ = models.create_model("unet", classes.num_classes, {"encoder": "resnet18"})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = MixedLoss("ce")
    first = None
    for _ in range(60):
        loss = loss_fn(model(x), y)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    metric = MeanIoU(classes.num_classes)
    with torch.no_grad():
        metric.update(model(x).argmax(1), y)
    assert loss.item() < first / 10
    assert metric.compute().miou_image > 0.8


def test_two_fold_run_end_to_end(sample_root, tmp_path, capsys):
    code = main(["train", "unet", "--data", str(sample_root), "--runs-dir", str(tmp_path / "runs"), "--json",
                 "--folds", "2", "--epochs", "2", "--image-size", "32", "--batch-size", "4",
                 "--set", "encoder=resnet18", "--set", "num_workers=0", "--set", "overlays=1"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"run", "model", "folds", "miou", "miou_std", "dir"} <= set(out)
    assert out["model"] == "unet" and len(out["folds"]) == 2
    assert out["miou"] == pytest.approx(np.mean([f["miou"] for f in out["folds"]]))
    run = tmp_path / "runs" / out["run"]
    assert json.loads((run / "config.json").read_text())["encoder"] == "resnet18"
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    history = pd.read_csv(run / "metrics.csv")
    assert len(history) == 4 and set(history["fold"]) == {0, 1}
    per_class = pd.read_csv(run / "per_class_iou.csv")
    assert list(per_class.columns) == ["class", "fold_0", "fold_1", "mean"] and len(per_class) == 12
    for png in ("learning_curves.png", "per_class_iou.png", "fold_0/overlay_0.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"
    data = DataRoot(sample_root)
    for fold in out["folds"]:
        d = run / f"fold_{fold['fold']}"
        assert not (d / "last.pt").exists()
        best = torch.load(d / "best.pt", weights_only=True)
        assert best["epoch"] in (1, 2) and set(best["model"]) == set(
            models.create_model("unet", 12, {"encoder": "resnet18"})[0].state_dict()
        )
        stored = read_probs(d / "oof.npy")
        assert stored.array.dtype == np.uint8 and stored.array.shape[1:] == (12, 256, 256)
        assert len(stored.images) == len(stored) == fold["n_val"]
        assert stored.classes == list(data.classes().names)
        np.testing.assert_allclose(stored.probabilities(slice(0, 2)).sum(1), 1.0, atol=12 * 0.5 / 255)


@pytest.mark.parametrize("metric", ["image", "dataset"])
def test_each_fold_keeps_its_images_scores_keyed_by_their_place_in_train_all(sample_root, tmp_path, metric):
    cfg = tiny_cfg(sample_root, epochs=1) | {"metric": metric, "save_oof": False}
    results = train_run(cfg, tmp_path / "runs" / "r", log=lambda m: None)
    order = [im.id for im in DataRoot(sample_root).coco("train_all").images]
    folds = make_folds(DataRoot(sample_root), "kfold", cfg["folds"], cfg["seed"])
    steps = []
    for fold in results["folds"]:
        scores = fold["image_scores"]
        assert sorted(scores["steps"]) == sorted(order.index(i) for i in folds.val_ids[fold["fold"]])
        mean = float(np.mean(scores["values"]))
        if metric == "image":  # the mean of the images' mIoUs is the fold's per-image mIoU exactly
            assert mean == pytest.approx(fold["miou_image"], abs=1e-9)
        else:  # jackknife pseudo-values: their mean estimates the dataset mIoU
            assert mean == pytest.approx(fold["miou_dataset"], abs=0.05)
        steps += scores["steps"]
    assert len(steps) == len(set(steps)) == len(order)  # one step per image of train_all


def test_resume_skips_finished_folds_and_continues_a_fold(sample_root, tmp_path):
    cfg = tiny_cfg(sample_root, epochs=3)
    run = tmp_path / "runs" / "r1"

    class Stop(Exception):
        pass

    def interrupt(fold, epoch, running, row):
        if fold == 1 and epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        train_run(cfg, run, log=lambda m: None, on_epoch=interrupt)
    finished = (run / "fold_0" / "result.json").read_text()
    assert (run / "fold_1" / "last.pt").exists() and not (run / "fold_1" / "result.json").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "running"

    lines: list[str] = []
    seen: list[tuple[int, int]] = []
    folds: list[tuple[int, dict]] = []
    results = train_run(
        cfg,
        run,
        log=lines.append,
        on_epoch=lambda f, e, r, row: seen.append((f, e)),
        on_fold=lambda f, r: folds.append((f, r)),
    )
    assert [f for f, _ in folds] == [0, 1]  # the fold finished earlier is heard too (a retried trial reports it)
    assert folds[0][1] == json.loads(finished)
    assert any("fold 0: finished earlier" in line for line in lines)
    assert any("fold 1: resuming after epoch 1" in line for line in lines)
    assert seen == [(1, 1), (1, 2)]  # only the remaining epochs ran
    assert (run / "fold_0" / "result.json").read_text() == finished
    assert len(pd.read_csv(run / "fold_1" / "metrics.csv")) == 3
    assert len(results["folds"]) == 2 and json.loads((run / "run.json").read_text())["status"] == "complete"


def test_unknown_model_names_closest_match(capsys):
    assert main(["train", "fcn61s"]) == 1
    err = capsys.readouterr().err
    assert "did you mean 'fcn16s'" in err and "unet" in err


def test_leaderboard_ranks_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    for name, score in (("a", 0.3), ("b", 0.6), ("c", 0.45)):
        d = runs / name
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"id": name, "model": "unet", "status": "complete"}))
        folds = [{"fold": 0, "miou": score - 0.01}, {"fold": 1, "miou": score + 0.01}]
        (d / "results.json").write_text(json.dumps({"miou": score, "miou_std": 0.01, "folds": folds}))
        (d / "config.json").write_text(json.dumps({"model": "unet", "lr": 0.0003, "encoder": "resnet18"}))
    (runs / "d").mkdir()
    (runs / "d" / "run.json").write_text(json.dumps({"id": "d", "model": "unet", "status": "running"}))
    assert main(["leaderboard", "--runs-dir", str(runs), "--json", "--csv", str(tmp_path / "lb.csv")]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["run"] for r in rows] == ["b", "c", "a"]
    assert all({"run", "model", "miou", "miou_std", "folds"} <= set(r) for r in rows)
    assert rows[0]["folds"] == 2 and "encoder=resnet18" in rows[0]["settings"]
    assert list(pd.read_csv(tmp_path / "lb.csv")["run"]) == ["b", "c", "a"]
    assert main(["leaderboard", "--runs-dir", str(runs)]) == 0
    table = capsys.readouterr().out
    assert table.index("0.6000 ± 0.0100") < table.index("0.4500")
    assert not math.isnan(rows[0]["miou"])


def test_background_only_runs_are_flagged(tmp_path, capsys):
    """A run whose kept checkpoints predict (almost) no foreground says so: a warning line, results.json and
    the leaderboard; a run that predicts foreground does not."""
    from competition.data import build_class_table
    from competition.train.summary import summarize_run

    classes = build_class_table([{"id": 0, "name": "a"}, {"id": 1, "name": "b"}])
    runs = tmp_path / "runs"
    for name, ratios in (("flat", (0.0, 0.03)), ("learned", (0.0, 0.9))):
        run = runs / name
        results = []
        for fold, ratio in enumerate(ratios):
            (run / f"fold_{fold}").mkdir(parents=True)
            pd.DataFrame([{"fold": fold, "epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "miou_image": 0.3,
                           "miou_dataset": 0.3}]).to_csv(run / f"fold_{fold}" / "metrics.csv", index=False)  # fmt: skip
            results.append({"fold": fold, "miou": 0.3, "miou_image": 0.3, "miou_dataset": 0.3, "pixel_accuracy": 0.9,
                            "per_class": [0.9, 0.0, None], "best_epoch": 1, "foreground_ratio": ratio})  # fmt: skip
        lines: list[str] = []
        summary = summarize_run(run, {"model": "unet", "metric": "image"}, classes, results, lines.append)
        (run / "run.json").write_text(json.dumps({"id": name, "model": "unet", "status": "complete"}))
        flagged = name == "flat"
        assert summary["background_only"] is flagged
        assert json.loads((run / "results.json").read_text())["background_only"] is flagged
        assert sum("predict (almost) only background" in line for line in lines) == int(flagged)
    assert main(["leaderboard", "--runs-dir", str(runs), "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
    assert rows["flat"]["background_only"] and not rows["learned"]["background_only"]
    assert main(["leaderboard", "--runs-dir", str(runs)]) == 0
    table = capsys.readouterr().out.splitlines()
    marked = [line.split()[0] for line in table[1:] if "[predicts background only]" in line]
    assert len(table) == 3 and len(marked) == 1 and "flat" in table[int(marked[0])]


def test_a_batch_of_ignored_pixels_has_zero_loss():
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), 255)
    for spec in ("ce", "ce+dice", "focal+lovasz"):
        loss = MixedLoss(spec)(logits, target)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_encoder_lr_gives_the_encoder_its_own_rate_and_freeze_encoder_keeps_it_fixed(tiny_root, tmp_path):
    """Fine-tuning settings: the optimiser's two groups, and a frozen encoder's weights (and BatchNorm running
    statistics) unchanged by an epoch of training while the decoder learns."""
    import models
    from competition.core.config import resolve
    from competition.train.optim import build_optimizer, freeze_encoder

    cfg = resolve(models.get_spec("unet").defaults, sets=["encoder=resnet18", "encoder_weights=null",
                                                           "encoder_lr=0.1", "lr=0.01"])  # fmt: skip
    model, _ = models.create_model("unet", 3, cfg)
    groups = {g["name"]: g for g in build_optimizer(model, cfg).param_groups}
    assert groups["encoder"]["lr"] == pytest.approx(0.001) and groups["decoder"]["lr"] == pytest.approx(0.01)
    n_encoder = sum(p.numel() for p in models.encoder_of(model).parameters())
    assert sum(p.numel() for p in groups["encoder"]["params"]) == n_encoder
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == sum(p.numel() for p in model.parameters())
    assert len(build_optimizer(model, {**cfg, "encoder_lr": 1.0}).param_groups) == 1

    encoder = models.encoder_of(model)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    inside = {id(p) for p in encoder.parameters()}
    decoder_before = [p.detach().clone() for p in model.parameters() if id(p) not in inside]
    optimizer = build_optimizer(model, cfg)
    model.train()
    freeze_encoder(model, True)
    for _ in range(3):
        loss = model(torch.randn(2, 3, 32, 32)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    decoder_after = [p.detach() for p in model.parameters() if id(p) not in inside]
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, decoder_after, strict=True))
    freeze_encoder(model, False)
    model.train()
    assert all(p.requires_grad for p in encoder.parameters()) and encoder.training


def test_a_run_with_freeze_encoder_trains_every_epoch_and_fcns_have_an_encoder_too(sample_root, tmp_path):
    """freeze_encoder=1 end to end (the frozen weights themselves: the test above): both epochs run and the run
    finishes; the FCNs' VGG16 features are their encoder."""
    cfg = tiny_cfg(sample_root, encoder_weights=None, freeze_encoder=1, epochs=2, folds=2, fold=0)
    seen = {}

    def snapshot(fold, epoch, running, row):
        seen[epoch] = row

    results = train_run(cfg, tmp_path / "runs" / "f", log=lambda m: None, on_epoch=snapshot)
    assert sorted(seen) == [0, 1] and results["miou"] >= 0
    assert models.encoder_of(models.create_model("fcn8s", 3, resolve(models.get_spec("fcn8s").defaults))[0])


def test_compile_compiles_in_place_or_says_why_and_keeps_the_eager_model(monkeypatch):
    """compile=true: the forward compiled in place (state dict keys unchanged, the same outputs), tried once at
    once; where torch.compile fails, one line and an untouched eager copy."""
    from competition.predict import compiled

    class Net(torch.nn.Module):  # a forward of its own, as every registry model has: torch 2.11's dynamo skips a
        def __init__(self):  # compiled torch.nn.Sequential's frames (torch.nn is in its skip list), which then
            super().__init__()  # runs eager with no compiler at all, while 2.14's traces it
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    torch.manual_seed(0)
    net = Net()
    x = torch.randn(2, 3, 16, 16)
    expected, keys = net.eval()(x), list(net.state_dict())
    stats = net.bn.running_mean.clone()
    lines = []

    def broken(self, *args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    with monkeypatch.context() as m:
        m.setattr(torch.nn.Module, "compile", broken)
        eager = compiled(net.train(), x, lines.append)
    assert lines == ["compile=true: torch.compile does not work here (no C++ compiler found); using the eager model"]
    assert eager.training and torch.allclose(eager.eval()(x), expected)
    lines.clear()
    fast = compiled(net.train(), x, lines.append)
    if shutil.which("g++") is None and shutil.which("c++") is None:  # inductor needs a C++ compiler on the CPU
        assert lines[0].startswith("compile=true: torch.compile does not work here")
        return
    assert lines[0].startswith("compile=true: model compiled") and fast.training
    assert list(fast.state_dict()) == keys and torch.equal(fast.bn.running_mean, stats)  # the trial changed no stats
    assert torch.allclose(fast.eval()(x), expected, atol=1e-5)


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_the_loaders_workers_start_without_fork(tiny_root, tmp_path, method):
    """Python 3.14 starts worker processes with forkserver, not fork (and macOS with spawn): the training and
    validation loaders' datasets travel to their workers pickled; validation batches equal those of no workers
    (training ones are augmented with each worker's own random numbers)."""
    from competition.train.setup import loaders, prepare

    flags = {"folds": 2, "image_size": 32, "batch_size": 4, "num_workers": 1, "seed": 0, "device": "cpu"}
    cfg = {**resolve(flags=flags), "model": "unet", "data": str(tiny_root)}
    setup = prepare(cfg, tmp_path / "runs", lambda m: None)
    train, val, _ = loaders(setup, 0)
    assert train.loader.num_workers == 1 and val.num_workers == 1
    train.loader.multiprocessing_context = val.multiprocessing_context = method
    images, targets = next(iter(train))
    val_images, val_targets = next(iter(val))
    setup.cfg["num_workers"] = 0
    train0, val0, _ = loaders(setup, 0)
    first0 = next(iter(train0))
    assert images.shape == first0[0].shape and targets.shape == first0[1].shape and targets.dtype == torch.long
    assert 0 <= int(targets.min()) and int(targets.max()) < setup.classes.num_classes
    assert all(torch.equal(a, b) for a, b in zip((val_images, val_targets), next(iter(val0)), strict=True))
