"""One grammar per thing: every pluggable kind is one table whose unknown names raise (never a silent
fallback), the settings accept exactly the names the tables build, and TTA has one parser for the settings
check, validation and prediction."""

from __future__ import annotations

import pytest
import torch

from competition.core.config import CHOICES, resolve
from competition.core.errors import UsageError, UserError
from competition.core.names import NAMES, Table, did_you_mean
from competition.core.tta import check_square, parse_tta
from competition.train.losses import LOSSES, MixedLoss
from competition.train.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from competition.train.trackers import TRACKERS


def test_a_table_raises_on_an_unknown_name_with_the_closest_one():
    with pytest.raises(
        UsageError, match=r"loss 'lovaz': expected one of ce, dice, focal, lovasz; did you mean 'lovasz'"
    ):
        LOSSES["lovaz"]
    with pytest.raises(UsageError, match="optimizer 'adamx'"):
        OPTIMIZERS["adamx"]  # fell back to AdamW before
    with pytest.raises(UsageError, match="scheduler 'step'"):
        SCHEDULES["step"]  # fell back to cosine before
    assert did_you_mean("zzz", ["ce"]) == ""


def test_a_table_whose_builders_and_declared_names_disagree_fails_when_made():
    with pytest.raises(TypeError, match=r"without a builder \['b'\]"):
        Table("kind", ("a", "b"), {"a": 1})
    with pytest.raises(TypeError, match=r"builders not declared \['c'\]"):
        Table("kind", ("a",), {"a": 1, "c": 2})


def test_the_settings_accept_exactly_the_names_the_tables_build():
    assert CHOICES["optimizer"] == OPTIMIZERS.names == NAMES["optimizer"]
    assert CHOICES["scheduler"] == SCHEDULES.names == NAMES["scheduler"]
    assert LOSSES.names == NAMES["loss"]
    assert TRACKERS.names == NAMES["tracker"]
    with pytest.raises(UsageError, match="optimizer='adamx'"):
        resolve(sets=["optimizer=adamx"])


@pytest.mark.parametrize("name", NAMES["loss"])
def test_every_declared_loss_builds_and_is_finite(name):
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0, 0] = 255  # ignored
    loss = MixedLoss(f"0.5*{name}", 255, torch.ones(3))(logits, target)
    assert torch.isfinite(loss) and loss.requires_grad


@pytest.mark.parametrize("optimizer", NAMES["optimizer"])
@pytest.mark.parametrize("scheduler", NAMES["scheduler"])
def test_every_declared_optimiser_and_schedule_builds_and_steps(optimizer, scheduler):
    cfg = resolve(sets=[f"optimizer={optimizer}", f"scheduler={scheduler}", "lr=0.1"], flags={"epochs": 2})
    model = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    weight = model.weight
    opt = build_optimizer(model, cfg)
    schedule = build_scheduler(opt, cfg, steps_per_epoch=4)
    for _ in range(8):
        weight.sum().backward()
        opt.step()
        schedule.step()
    assert type(opt).__name__.lower() == optimizer
    assert weight.detach().ne(1).all()  # it learned
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) if scheduler == "none" else opt.param_groups[0]["lr"] < 0.1


@pytest.mark.parametrize("name", NAMES["tracker"])
def test_every_declared_tracker_builds_and_records_a_run(name, tmp_path, wandb_offline):
    from PIL import Image

    runs = tmp_path / "runs"
    (runs / "r").mkdir(parents=True)
    Image.new("RGB", (24, 8), "red").save(runs / "overlay_0.png")
    cfg = resolve(sets=[f"tracker={name}"]) | {"model": "unet"}
    tracker = TRACKERS[name](cfg, runs / "r", {}, lambda _: None)
    tracker.epoch(0, {"fold": 0, "epoch": 1, "train_loss": 1.0, "miou_image": 0.25, "lr": 1e-3})
    tracker.images(0, [runs / "overlay_0.png"], 1)
    tracker.fold_done(0, {"fold": 0, "miou": 0.25})
    tracker.finish([{"fold": 0, "miou": 0.25}], 0.25, 0.0)
    written = {
        "tensorboard": list((runs / "r").rglob("events.out.tfevents*")),
        "mlflow": list(runs.glob("mlflow.db")),
        "wandb": list(wandb_offline.glob("wandb/offline-run-*/run-*.wandb")),
    }
    assert {k for k, files in written.items() if files} == ({name} - {"none"})


# ------------------------------------------------------------------ TTA: one parser


@pytest.mark.parametrize("spec", ["d4,hflip", "hflip,hflip", "5", "0.05", "1,1", "rot", "hflip,,1"])
def test_tta_specs_the_settings_check_once_let_through_are_refused_by_both(spec):
    with pytest.raises(UsageError, match="val_tta="):  # passed the old settings regex, failed after an epoch
        resolve(sets=[f"val_tta={spec}"])
    with pytest.raises(UserError, match="--tta"):
        parse_tta(spec)


@pytest.mark.parametrize("spec,views", [("none", 1), ("hflip", 2), ("hflip,vflip,0.75,1,1.25", 9), ("d4", 8),
                                        ("d4,0.5,1", 16), (" hflip , 1.5 ", 2)])  # fmt: skip
def test_valid_tta_specs_parse_the_same_everywhere(spec, views):
    assert len(parse_tta(spec)) == views
    assert len(parse_tta(resolve(sets=[f"val_tta={spec}"])["val_tta"], "val_tta")) == views


def test_d4_on_a_non_square_size_is_refused_with_the_settings():
    with pytest.raises(UsageError, match="val_tta=d4.*needs square inputs, got image size 32x48"):
        resolve(sets=["val_tta=d4", "image_size=32x48"])  # failed only at the first validation before
    resolve(sets=["val_tta=hflip", "image_size=32x48"])
    with pytest.raises(UserError, match="needs square inputs"):
        check_square(parse_tta("d4"), (32, 48))
