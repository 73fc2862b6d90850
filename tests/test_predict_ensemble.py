"""predict and ensemble: fold and TTA soft voting, stored probabilities, weights fitted out of fold, CSV voting.

Two tiny runs (unet/resnet18, 2 folds, 1 epoch, 32 px) are trained and predicted once per module; tests that
break a run work on a hard-linked copy of it (every writer replaces files, so the original stays intact).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from competition.cli import main
from competition.core.config import resolve
from competition.core.errors import UserError
from competition.core.fileio import read_json, write_json
from competition.core.runs import update_run
from competition.data import DataRoot, write_sample_dataset
from competition.ensemble import ensemble_runs
from competition.ensemble.member_weights import parse_weights
from competition.ensemble.vote import majority
from competition.predict import parse_tta, predict_probs, predict_run, read_probs
from competition.submit import check_submission, read_submission, write_submission
from competition.train import format_table, leaderboard_rows, train_run
from tests.conftest import build_root

NUM_CLASSES = 12  # the sample dataset: background + 11 categories


@dataclass(frozen=True)
class Trained:
    root: Path
    runs: Path
    submissions: Path

    @property
    def test_ids(self) -> list[str]:
        return [im.file_name for im in DataRoot(self.root).coco("test").images]


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """Runs `run-a` and `run-b` (different seeds, so different folds), each with test probabilities and a CSV."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPETITION_CACHE", str(base / "cache"))
        mp.chdir(base)
        root = write_sample_dataset(base / "data", n_train=12, n_test=4, size=48)
        for name, seed in (("run-a", 1), ("run-b", 2)):
            flags = {"folds": 2, "epochs": 1, "image_size": 32, "batch_size": 4, "num_workers": 0, "seed": seed}
            flags |= {"device": "cpu", "encoder": "resnet18", "overlays": 0}
            cfg = resolve(models.get_spec("unet").defaults, flags=flags)
            cfg.update(model="unet", data=str(root))
            train_run(cfg, base / "runs" / name, quiet)
            predict_run(base / "runs" / name, out_dir=base / "submissions", log=quiet)
    return Trained(root, base / "runs", base / "submissions")


def linked_copy(src: Path, dst: Path, *ignore: str) -> Path:
    """A copy of a run folder made of hard links (minus the `ignore` patterns)."""
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns(*ignore))
    return dst


def run_cli(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """Exit code, the JSON of the last stdout line (if any) and stderr of `./run.sh ARGV`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 and lines else None, err


# --- TTA ----------------------------------------------------------------------------------------------------


def test_flip_tta_of_a_flip_equivariant_model_changes_nothing():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 20, 20)
    views = parse_tta("hflip,vflip")
    assert len(views) == 3
    pointwise = torch.nn.Conv2d(3, 5, 1)  # a 1x1 convolution commutes with flips
    plain = predict_probs(pointwise, images, amp=False, channels_last=False)
    torch.testing.assert_close(predict_probs(pointwise, images, views, amp=False, channels_last=False), plain)
    assert plain.shape == (2, 5, 256, 256)
    torch.testing.assert_close(plain.sum(1), torch.ones(2, 256, 256))
    lopsided = torch.nn.Conv2d(3, 5, 3, padding=1)  # not flip-equivariant: the views must change something
    plain = predict_probs(lopsided, images, amp=False, channels_last=False)
    assert not torch.allclose(predict_probs(lopsided, images, views, amp=False, channels_last=False), plain)


# --- predict ------------------------------------------------------------------------------------------------


def test_predict_json_contract_probs_and_csv(trained, tmp_path, capsys):
    run = linked_copy(trained.runs / "run-a", trained.runs / "run-a-tta-copy")
    code, result, err = run_cli(capsys, "predict", str(run), "--tta", "hflip", "--batch-size", "3", "--json")
    assert code == 0, err
    assert {"csv", "run", "probs", "tta", "folds"} <= set(result)
    assert result["run"] == run.name and result["folds"] == 2 and result["tta"] == ["1", "1+hflip"]
    assert Path(result["csv"]) == Path("submissions") / f"{run.name}-tta.csv"
    assert check_submission(result["csv"], trained.test_ids, NUM_CLASSES) == []
    stored = read_probs(Path(result["probs"]))
    manifest = stored.manifest
    assert stored.array.dtype == np.uint8 and stored.array.shape == (4, NUM_CLASSES, 256, 256)
    assert manifest["images"] == trained.test_ids and manifest["members"] == [run.name]
    assert manifest["folds"] == [0, 1] and manifest["tta"] == ["1", "1+hflip"] and manifest["dtype"] == "uint8"
    np.testing.assert_allclose(stored.probabilities().sum(1), 1, atol=NUM_CLASSES * 0.5 / 255)
    masks = read_submission(result["csv"], trained.test_ids, NUM_CLASSES)
    np.testing.assert_array_equal(masks, stored.array.argmax(1))  # every category kept: same values
    sidecar = read_json(Path(result["csv"]).with_suffix(".json"))
    assert sidecar["run"] == run.name and sidecar["probs"] == result["probs"]
    assert "submission: submissions" in err  # human output on stderr with --json


def test_predict_without_checkpoints_names_the_run(trained, capsys):
    run = linked_copy(trained.runs / "run-a", trained.runs / "pruned-copy", "*.pt")
    code, _, err = run_cli(capsys, "predict", str(run))
    assert code == 1 and "pruned-copy" in err and "best.pt" in err and "Traceback" not in err


def test_predict_with_another_class_table_names_both(trained):
    run = linked_copy(trained.runs / "run-a", trained.runs / "classes-copy")
    update_run(run, classes=["background", "something else"])
    with pytest.raises(UserError, match=r"classes-copy.*something else.*General trash"):
        predict_run(run, log=quiet)


# --- ensemble -----------------------------------------------------------------------------------------------


def test_ensemble_of_identical_members_is_the_member(trained):
    result = ensemble_runs(["run-a", "run-a"], trained.runs, "same", "equal", log=quiet)
    assert result["weights"] == [0.5, 0.5]
    assert result["oof_miou"] == result["member_oof_miou"][0] == result["member_oof_miou"][1]
    member_csv = trained.submissions / "run-a.csv"
    np.testing.assert_array_equal(
        read_submission(result["csv"], trained.test_ids, NUM_CLASSES),
        read_submission(member_csv, trained.test_ids, NUM_CLASSES),
    )
    auto = ensemble_runs(["run-a", "run-a"], trained.runs, "same-auto", "auto", log=quiet)
    assert auto["selection"]["method"] == "equal" and auto["oof_miou"] == auto["member_oof_miou"][0]


def test_auto_weights_are_chosen_on_held_out_halves(trained, capsys):
    code, result, err = run_cli(
        capsys, "ensemble", "run-a", "run-b", "--runs-dir", str(trained.runs), "--name", "ab", "--json"
    )
    assert code == 0, err
    assert {"csv", "members", "weights", "oof_miou", "member_oof_miou"} <= set(result)
    assert result["members"] == ["run-a", "run-b"] and len(result["member_oof_miou"]) == 2
    assert sum(result["weights"]) == pytest.approx(1) and min(result["weights"]) >= 0
    selection = result["selection"]
    assert selection["method"] in ("equal", "best member", "greedy") and selection["halves"] == [6, 6]
    assert set(selection["gains"]) == {"best member - equal", "greedy - equal", "greedy - best member"}
    if selection["method"] == "equal":
        assert result["weights"] == [0.5, 0.5]
    elif selection["method"] == "best member":
        assert result["oof_miou"] == max(result["member_oof_miou"])
    assert "held out" in err and "-> " + selection["method"] in err
    assert check_submission(result["csv"], trained.test_ids, NUM_CLASSES) == []
    sidecar = read_json(Path(result["csv"]).with_suffix(".json"))
    assert sidecar["weights"] == result["weights"] and "date" in sidecar
    assert "ensemble" in err and "OOF mIoU" in err  # the member table
    row = next(r for r in leaderboard_rows(trained.runs) if r["run"] == "ab")
    assert row["kind"] == "ensemble" and row["model"] == "ensemble" and row["miou"] == result["oof_miou"]
    assert "run-a*" in format_table([row])


def test_select_takes_the_best_run_of_each_model_first(trained, tmp_path, capsys):
    runs = tmp_path / "runs"
    for name in ("run-a", "run-b"):
        linked_copy(trained.runs / name, runs / name)
    other = linked_copy(trained.runs / "run-b", runs / "other-model")
    update_run(other, model="fpn")
    results = read_json(other / "results.json")
    write_json(other / "results.json", {**results, "model": "fpn", "miou": read_run_miou(runs) - 0.01})
    code, result, err = run_cli(capsys, "ensemble", "--select", "top:2", "--runs-dir", str(runs), "--json")
    assert code == 0, err
    best_unet = max(("run-a", "run-b"), key=lambda r: read_json(runs / r / "results.json")["miou"])
    assert result["members"] == [best_unet, "other-model"]  # the lower-ranked fpn before the other unet
    code, _, err = run_cli(capsys, "ensemble", "--select", "top:4", "--runs-dir", str(runs))
    assert code == 1 and "3 complete runs with out-of-fold probabilities" in err
    code, _, err = run_cli(capsys, "ensemble", "run-a", "--select", "top:2", "--runs-dir", str(runs))
    assert code == 2 and "drop the RUN arguments" in err
    assert main(["ensemble", "--select", "best", "--runs-dir", str(runs)]) == 2


def read_run_miou(runs: Path) -> float:
    return min(read_json(runs / r / "results.json")["miou"] for r in ("run-a", "run-b"))


def test_old_float16_probabilities_still_ensemble(trained):
    """Run folders of earlier versions stored float16 probabilities (manifest dtype float16): they still load,
    and score as the uint8 files within 1e-3."""
    old = linked_copy(trained.runs / "run-b", trained.runs / "float16-copy")
    for path in [*old.glob("fold_*/oof.npy"), old / "test" / "probs.npy"]:
        stored = read_probs(path)
        values = stored.probabilities().astype(np.float16)
        path.unlink()
        np.save(path, values)
        manifest = {k: v for k, v in stored.manifest.items() if k != "levels"}
        write_json(path.with_suffix(".json"), {**manifest, "dtype": "float16"})
        assert read_probs(path).array.dtype == np.float16
    new = ensemble_runs(["run-a", "run-b"], trained.runs, "new-format", "0.3,0.7", log=quiet)
    old_result = ensemble_runs(["run-a", old.name], trained.runs, "old-format", "0.3,0.7", log=quiet)
    assert abs(new["oof_miou"] - old_result["oof_miou"]) <= 1e-3
    assert new["member_oof_miou"][1] == pytest.approx(old_result["member_oof_miou"][1], abs=1e-3)
    same = read_submission(new["csv"], trained.test_ids, NUM_CLASSES) == read_submission(
        old_result["csv"], trained.test_ids, NUM_CLASSES
    )
    assert same.mean() > 0.995  # ties of weak members may break either way; the mIoU above is the criterion


def test_ensemble_predicts_members_without_test_probabilities(trained):
    copy = linked_copy(trained.runs / "run-b", trained.runs / "unpredicted-copy")
    shutil.rmtree(copy / "test")
    messages: list[str] = []
    fresh = ensemble_runs(["run-a", copy.name], trained.runs, "fresh", "0.3,0.7", log=messages.append)
    assert any("unpredicted-copy: no test probabilities; running predict first" in m for m in messages)
    assert (copy / "test" / "probs.npy").exists() and fresh["weights"] == pytest.approx([0.3, 0.7])
    assert fresh["selection"] == {}
    stored = ensemble_runs(["run-a", "run-b"], trained.runs, "stored", "0.3,0.7", log=quiet)
    assert fresh["oof_miou"] == stored["oof_miou"]
    np.testing.assert_array_equal(
        read_submission(fresh["csv"], trained.test_ids, NUM_CLASSES),
        read_submission(stored["csv"], trained.test_ids, NUM_CLASSES),
    )


def test_missing_out_of_fold_probabilities_name_the_run(trained):
    copy = linked_copy(trained.runs / "run-b", trained.runs / "one-fold-copy", "*.pt")
    (copy / "fold_0" / "oof.npy").unlink()
    with pytest.raises(UserError, match=r"one-fold-copy: no out-of-fold probabilities for \d+ images .*--fold"):
        ensemble_runs(["run-a", copy.name], trained.runs, log=quiet)
    (copy / "fold_1" / "oof.npy").unlink()
    with pytest.raises(UserError, match=r"one-fold-copy: no out-of-fold probabilities \(fold_\*/oof.npy\)"):
        ensemble_runs(["run-a", copy.name], trained.runs, log=quiet)


def test_probabilities_refuse_a_disk_without_room(tmp_path, monkeypatch):
    from competition.predict import write_probs

    usage = shutil.disk_usage(tmp_path)
    needed = 3 * 12 * 256 * 256  # uint8
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=needed - 1))
    with pytest.raises(UserError, match=r"oof.npy: needs 0.00 GiB for probabilities but only 0.00 GiB is free"):
        write_probs(tmp_path / "oof.npy", ["a", "b", "c"], [str(c) for c in range(12)])
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=needed))
    write_probs(tmp_path / "oof.npy", ["a", "b", "c"], [str(c) for c in range(12)]).abort()


def test_mismatched_classes_or_test_images_name_the_run(trained):
    copy = linked_copy(trained.runs / "run-b", trained.runs / "mismatch-copy", "*.pt")
    manifest = copy / "fold_1" / "oof.json"
    original = read_json(manifest)
    write_json(manifest, {**original, "classes": [*original["classes"][:-1], "Socks"]})
    with pytest.raises(UserError, match=r"mismatch-copy.*Socks.*differ from.*Clothing"):
        ensemble_runs(["run-a", copy.name], trained.runs, log=quiet)
    write_json(manifest, original)
    test_manifest = copy / "test" / "probs.json"
    stored = read_json(test_manifest)
    write_json(test_manifest, {**stored, "images": stored["images"][::-1]})
    with pytest.raises(UserError, match=r"mismatch-copy/test/probs.npy: .* not those of .*test.json in order"):
        ensemble_runs(["run-a", copy.name], trained.runs, log=quiet)


def test_ensemble_refuses_bad_members_and_names(trained, capsys):
    code, _, err = run_cli(capsys, "ensemble", "run-a", "--runs-dir", str(trained.runs))
    assert code == 1 and "at least two runs" in err
    with pytest.raises(UserError, match="run-b: a trained run has this name"):
        ensemble_runs(["run-a", "run-b"], trained.runs, "run-b", log=quiet)
    with pytest.raises(UserError, match="--name"):
        ensemble_runs(["run-a", "run-b"], trained.runs, "../escape", log=quiet)
    nested = trained.runs / "nested-ensemble"
    write_json(nested / "run.json", {"id": nested.name, "kind": "ensemble", "members": ["run-a", "run-b"]})
    with pytest.raises(UserError, match=r"nested-ensemble: an ensemble, not a trained run"):
        ensemble_runs([nested.name, "run-a"], trained.runs, log=quiet)


def test_weights_parsing():
    assert parse_weights("auto", 2) is None
    np.testing.assert_allclose(parse_weights("equal", 4), [0.25] * 4)
    np.testing.assert_allclose(parse_weights("1,3", 2), [0.25, 0.75])
    for bad in ("1", "a,b", "-1,2", "0,0", "1,nan"):
        with pytest.raises(UserError, match="--weights"):
            parse_weights(bad, 2)


# --- voting CSVs --------------------------------------------------------------------------------------------


def test_majority_ties_go_to_the_earliest_map_with_a_tied_value():
    votes = np.array([[0, 5, 3], [1, 5, 4], [2, 6, 4], [1, 6, 3], [2, 7, 7]])[:, None]  # 5 maps, 1x3 pixels
    np.testing.assert_array_equal(majority(votes), [[1, 5, 3]])


def test_from_csv_votes_pixel_by_pixel(tmp_path, capsys):
    root = build_root(tmp_path / "data")  # 2 test images, 4 classes
    ids = [im.file_name for im in DataRoot(root).coco("test").images]
    first = np.zeros((2, 256, 256), np.uint8)
    first[:, 200:] = 3
    second = np.ones_like(first)
    third = np.full_like(first, 2)
    third[:, :64], third[:, 64:128] = 1, 0
    expected = np.zeros_like(first)
    expected[:, :64], expected[:, 200:] = 1, 3  # two agree: theirs; all differ: the first CSV's
    paths = []
    for i, masks in enumerate((first, second, third)):
        paths.append(str(write_submission(tmp_path / f"{i}.csv", ids, masks)))
    code, result, err = run_cli(
        capsys, "ensemble", "--from-csv", *paths, "--data", str(root), "--name", "vote", "--json"
    )
    assert code == 0, err
    assert result["csv"] == str(Path("submissions") / "vote.csv") and result["members"] == paths
    np.testing.assert_array_equal(read_submission(result["csv"], ids, 4), expected)
    broken = tmp_path / "broken.csv"
    broken.write_text("image_id,PredictionString\n")
    code, _, err = run_cli(
        capsys, "ensemble", "--from-csv", paths[0], str(broken), "--data", str(root), "--name", "vote"
    )
    assert code == 1 and "broken.csv" in err
    np.testing.assert_array_equal(read_submission(result["csv"], ids, 4), expected)  # the old file is intact


# --- end to end ---------------------------------------------------------------------------------------------


def test_trained_run_to_scored_submission(trained, capsys):
    run = linked_copy(trained.runs / "run-b", trained.runs / "scored-copy")
    code, predicted, err = run_cli(capsys, "predict", "scored", "--runs-dir", str(trained.runs), "--json")
    assert code == 0, err
    gt, root = trained.root / "test_gt.json", str(trained.root)
    code, scores, err = run_cli(capsys, "score", predicted["csv"], "--gt", str(gt), "--data", root, "--json")
    assert code == 0, err
    assert predicted["run"] == run.name and 0 <= scores["miou_image"] <= 1
    assert {"miou_image", "miou_dataset", "per_class", "pixel_accuracy"} <= set(scores)
