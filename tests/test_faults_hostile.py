"""Fault table, second campaign (H): names that would be paths, credentials in every form, scorer inputs that
disagree, damaged run folders, class ids that collide, resource bombs, files that are not files, bad content
found late, edge settings. Each case: exit 1 (2 for usage), one `error:` line naming the file, the record or
the setting, no traceback, nothing written outside the runs folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from competition.cli import main
from competition.core.errors import UsageError, UserError, user_message
from competition.core.names import plain_name
from competition.core.redact import redact, redact_url, url_secrets
from competition.submit import write_submission
from tests.conftest import build_root, tiny_coco


def one_error(capsys, argv: list[str], code: int = 1) -> str:
    """Run the CLI (at most 60 s: a hang is a failure); expect `code` and exactly one stderr line `error: ...`."""

    def hang(*_):
        raise TimeoutError(f"{argv[0]} hung")

    before = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        got = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    err = capsys.readouterr().err.strip()
    assert got == code, err
    lines = [line for line in err.splitlines() if line.startswith("error: ") or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


# --------------------------------------------------------------------------- names that would be paths


@pytest.mark.parametrize("name", ["ok", "fcn16s-t003-ab12", "a.b_c+d-e", "A" * 120, "unet-20261202-201259-abe0"])
def test_plain_names_are_accepted(name):
    assert plain_name(name, "--study") == name


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "../escaped", "a/b", "a\\b", "a\0b", "A" * 121,
                                  "tab\tname", "ü", 5, None, ["a"]])  # fmt: skip
def test_names_that_are_not_plain_are_refused(name):
    with pytest.raises(UsageError, match="is not a plain name"):
        plain_name(name, "--study")
    with pytest.raises(UserError) as e:
        plain_name(name, "run.json", UserError)
    assert type(e.value) is UserError  # read from a file: exit 1, not a usage error


@pytest.mark.parametrize("study", ["../escaped", "a/b", ".hidden", "/tmp/abs"])
def test_a_study_name_never_becomes_a_path(study, tiny_root, tmp_path, capsys):
    runs = tmp_path / "work" / "runs"
    line = one_error(capsys, ["search", "unet", "--data", str(tiny_root), "--runs-dir", str(runs),
                              "--study", study, "--trials", "1", "--epochs", "1", "--folds", "2"], 2)  # fmt: skip
    assert "--study" in line and "not a plain name" in line
    assert not (tmp_path / "work" / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert not any(p.name == "optuna.db" for p in files_under(tmp_path))  # refused before the study was opened


@pytest.mark.parametrize("command", ["predict", "ensemble", "pseudo-label"])
def test_output_names_never_become_paths(command, small_runs, tmp_path, capsys):
    runs = small_runs / "runs"
    before = files_under(small_runs)
    argv = {
        "predict": ["predict", "run-a", "--runs-dir", str(runs), "--name", "../../outside"],
        "ensemble": ["ensemble", "run-a", "run-b", "--runs-dir", str(runs), "--name", "../outside"],
        "pseudo-label": ["pseudo-label", "run-a", "--runs-dir", str(runs), "--name", "../../outside"],
    }[command]
    line = one_error(capsys, argv, 2)
    assert "--name '" in line and "not a plain name" in line
    assert files_under(small_runs) == before and not (small_runs / "outside").exists()


def test_an_lb_sidecar_naming_a_path_is_no_origin(small_runs, tmp_path, capsys):
    from competition.core.fileio import file_sha256
    from competition.submit import find_origin

    csv = tmp_path / "copy.csv"
    shutil.copy(small_runs / "submissions" / "run-a.csv", csv)
    csv.with_suffix(".json").write_text(json.dumps({"run": "../../etc", "sha256": file_sha256(csv)}))
    assert find_origin(file_sha256(csv), csv, tmp_path / "no-runs", tmp_path / "no-submissions") is None


# --------------------------------------------------------------------------- credentials


SECRET_URLS = {
    "user info": ("postgresql://alice:hunter2@db.example/optuna", "hunter2"),
    "unencoded @ in password": ("postgresql://alice:p@ss@w0rd@db.example/optuna", "p@ss@w0rd"),
    "unencoded / in password": ("postgresql://alice:a/b/c@db.example:5432/optuna", "a/b/c"),
    "percent-encoded": ("postgresql://alice:s%40cret@db.example/optuna", "s@cret"),
    "query password": ("postgresql://alice@db.example/optuna?password=hunter2", "hunter2"),
    "query sslpassword": ("postgresql://alice@db.example/optuna?sslmode=require&sslpassword=keypass", "keypass"),
    "driver URL": ("postgresql+psycopg2://db.example/optuna?user=alice&password=hunter2", "hunter2"),
    "keyword string": ("host=db.example user=alice password=hunter2 dbname=optuna", "hunter2"),
    "quoted keyword": ("host=db.example password='it\\'s secret' dbname=optuna", "it's secret"),
}


@pytest.mark.parametrize("case", list(SECRET_URLS))
def test_every_credential_form_is_masked(case):
    url, secret = SECRET_URLS[case]
    shown = redact_url(url)
    assert secret not in shown and "***" in shown
    assert "db.example" in shown  # the rest of the URL stays readable
    driver_text = f'connection to "{url}" failed: password "{secret}" rejected (raw {url_secrets(url)})'
    assert secret not in redact(driver_text, url)


@pytest.mark.parametrize("case", ["query password", "unencoded @ in password", "user info"])
def test_storage_errors_never_print_the_password(case, tiny_root, tmp_path, capsys):
    url, secret = SECRET_URLS[case]
    url = url.replace("db.example", "127.0.0.1:9")  # nothing listens there: refused at once
    line = one_error(capsys, ["search", "unet", "--data", str(tiny_root), "--runs-dir", str(tmp_path / "runs"),
                              "--storage", url, "--trials", "1", "--epochs", "1", "--folds", "2"])  # fmt: skip
    assert "--storage" in line and secret not in line
    for path in files_under(tmp_path / "runs"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------- the scorer's inputs


def scoring_case(tmp_path: Path, edit) -> tuple[Path, Path, Path]:
    """A root, a valid CSV for its test images, and a ground truth edited by `edit`."""
    root = build_root(tmp_path / "data")
    test = json.loads((root / "test.json").read_text())
    gt = {**test, "annotations": [{"id": 1, "image_id": 100, "category_id": 1,
                                    "segmentation": [[1, 1, 10, 1, 10, 10, 1, 10]]}]}  # fmt: skip
    edit(gt)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    csv = tmp_path / "sub.csv"
    masks = np.zeros((len(test["images"]), 256, 256), dtype=np.uint8)
    write_submission(csv, [im["file_name"] for im in test["images"]], masks)
    return root, csv, tmp_path / "gt.json"


def _resize_first(gt):
    gt["images"][0]["width"] = 40


def _duplicate_name(gt):
    gt["images"].append({**gt["images"][0], "id": 999})


def _unknown_category(gt):
    gt["categories"].append({"id": 42, "name": "Styrofoam"})
    gt["annotations"][0]["category_id"] = 42


def _renamed_category(gt):
    gt["categories"][1] = {"id": 1, "name": "Paper"}


SCORER_CASES = {
    "image size differs from test.json": (_resize_first, ["batch_03/t0.jpg", "40x20 here but 30x20"]),
    "duplicate file_name": (_duplicate_name, ["duplicate file_name 'batch_03/t0.jpg'"]),
    "category the dataset lacks": (_unknown_category, ["annotation id 1", "category id 42 is not a category"]),
    "category of another name": (_renamed_category, ["category id 1 is 'Paper' here but 'General trash'"]),
}


@pytest.mark.parametrize("case", list(SCORER_CASES))
def test_the_scorer_checks_its_inputs_against_each_other(case, tmp_path, capsys):
    edit, fragments = SCORER_CASES[case]
    root, csv, gt = scoring_case(tmp_path, edit)
    line = one_error(capsys, ["score", str(csv), "--gt", str(gt), "--data", str(root)])
    assert "gt.json" in line
    for fragment in fragments:
        assert fragment in line, line


def test_the_scorer_still_scores_consistent_inputs(tmp_path, capsys):
    root, csv, gt = scoring_case(tmp_path, lambda gt: None)
    assert main(["score", str(csv), "--gt", str(gt), "--data", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["miou_dataset"] < 1.0


# --------------------------------------------------------------------------- damaged run folders


@pytest.fixture
def run_copy(small_runs, tmp_path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(small_runs / "runs" / "run-a", runs / "run-a")
    return runs


def test_a_run_missing_one_fold_checkpoint_is_refused_not_predicted_smaller(run_copy, tmp_path, capsys):
    (run_copy / "run-a" / "fold_1" / "best.pt").unlink()
    line = one_error(capsys, ["predict", "run-a", "--runs-dir", str(run_copy)])
    assert "fold 1 is finished but its checkpoint fold_1/best.pt is missing" in line
    assert "--resume run-a" in line
    assert not (tmp_path / "submissions").exists()


@pytest.mark.parametrize("damage", ["config.json missing", "config.json not JSON", "run.json not JSON",
                                    "results.json a list", "stray folder fold_x", "stray file fold_9"])  # fmt: skip
def test_damaged_run_files_are_one_line(damage, run_copy, tmp_path, capsys):
    run = run_copy / "run-a"
    target, _, how = damage.partition(" ")
    if how == "missing":
        (run / target).unlink()
    elif how == "not JSON":
        (run / target).write_text("{not json")
    elif how == "a list":
        (run / target).write_text("[1, 2]")
    elif how == "folder fold_x":
        (run / "fold_x").mkdir()
    else:
        (run / "fold_9").write_text("not a folder")
    argv = ["predict", str(run), "--runs-dir", str(run_copy), "--name", "x"]
    if damage.startswith("stray"):  # not a fold: ignored, the two real folds predict
        assert main(argv) == 0, capsys.readouterr().err
        assert "folds [0, 1]" in capsys.readouterr().out
        return
    line = one_error(capsys, argv)
    assert target in line


# --------------------------------------------------------------------------- class ids that collide


@pytest.mark.parametrize("n", [254, 255, 300])
def test_category_counts_that_do_not_fit_uint8_masks_are_refused(n, tmp_path, capsys):
    coco = tiny_coco()
    coco["categories"] = [{"id": i, "name": f"c{i}"} for i in range(n)]
    root = build_root(tmp_path / "data", coco)
    argv = ["data-info", "--data", str(root), "--folds", "2"]
    if n <= 254:
        assert main(argv) == 0, capsys.readouterr().err
        return
    line = one_error(capsys, argv)
    assert f"{n} categories; at most 254" in line


# --------------------------------------------------------------------------- resource bombs


YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)  # ~400 bytes standing for 9**9 = 387 million strings


@pytest.mark.parametrize("option", ["--config", "--space"])
def test_a_yaml_alias_bomb_is_one_short_line(option, tiny_root, tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(YAML_BOMB)
    line = one_error(capsys, ["search", "unet", "--data", str(tiny_root), "--runs-dir", str(tmp_path / "runs"),
                              option, str(bomb), "--trials", "1"])  # fmt: skip
    assert "bomb.yaml" in line and "aliases expanded" in line and len(line) < 300


def test_a_set_value_bomb_is_refused(tiny_root, tmp_path, capsys):
    value = "[" + ",".join(["[" + ",".join(["x"] * 200) + "]"] * 60) + "]"  # 12,000 values in one --set
    line = one_error(capsys, ["train", "unet", "--data", str(tiny_root), "--set", f"classes={value}"])
    assert "--set value" in line and len(line) < 300


def test_deeply_nested_json_is_one_line(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    (root / "train_all.json").write_text("[" * 200_000 + "]" * 200_000)
    line = one_error(capsys, ["data-info", "--data", str(root)])
    assert "train_all.json" in line and "nested too deeply" in line


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG file whose header claims width x height (no pixel data: it is never decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(data + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def test_a_decompression_bomb_image_is_one_line(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    png_header(root / "batch_01_vt" / "b.png", 30000, 30000)  # refused when opened, before any size check
    line = one_error(capsys, ["data-info", "--data", str(root)])
    assert "b.png" in line and "exceeds limit" in line


# --------------------------------------------------------------------------- files that are not files


def make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def make_folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


def non_utf8(path: Path) -> None:
    path.write_bytes(b"lr: 0.001\nname: caf\xe9\n")


@pytest.mark.parametrize("kind", ["folder", "fifo"])
@pytest.mark.parametrize("which", ["train_all.json", "test.json"])
def test_dataset_json_that_is_not_a_file(kind, which, tmp_path, capsys):
    root = build_root(tmp_path / "data")
    (make_fifo if kind == "fifo" else make_folder)(root / which)
    line = one_error(capsys, ["data-info", "--data", str(root)])
    assert which in line and ("is a folder" if kind == "folder" else "not a regular file") in line


@pytest.mark.parametrize("kind", ["folder", "fifo", "non-UTF-8"])
def test_config_file_that_is_not_a_text_file(kind, tiny_root, tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("lr: 0.001\n")
    {"folder": make_folder, "fifo": make_fifo, "non-UTF-8": non_utf8}[kind](path)
    line = one_error(capsys, ["train", "unet", "--data", str(tiny_root), "--config", str(path)])
    assert "cfg.yaml" in line
    assert {"folder": "is a folder", "fifo": "not a regular file", "non-UTF-8": "not UTF-8"}[kind] in line


@pytest.mark.parametrize("kind", ["folder", "fifo"])
@pytest.mark.parametrize("what", ["csv", "gt"])
def test_score_inputs_that_are_not_files(kind, what, tmp_path, capsys):
    root, csv, gt = scoring_case(tmp_path, lambda gt: None)
    (make_fifo if kind == "fifo" else make_folder)(csv if what == "csv" else gt)
    line = one_error(capsys, ["score", str(csv), "--gt", str(gt), "--data", str(root)])
    assert (csv.name if what == "csv" else gt.name) in line


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_check_of_a_csv_that_is_not_a_file(kind, tmp_path, capsys):
    root, csv, _ = scoring_case(tmp_path, lambda gt: None)
    (make_fifo if kind == "fifo" else make_folder)(csv)
    assert main(["check", str(csv), "--data", str(root)]) == 1
    err = capsys.readouterr().err
    problems = [line for line in err.strip().splitlines() if not line.startswith("data: ")]  # the data-root line
    assert "Traceback" not in err and len(problems) == 1 and "sub.csv" in problems[0], err


def test_runs_dir_that_is_a_file(tiny_root, tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    line = one_error(capsys, ["train", "unet", "--data", str(tiny_root), "--runs-dir", str(tmp_path / "runs")])
    assert "runs" in line and "a file stands where a folder is needed" in line


def test_runs_dir_where_nothing_can_be_written(tiny_root, capsys):
    line = one_error(capsys, ["train", "unet", "--data", str(tiny_root), "--runs-dir", "/proc/runs"])
    assert "/proc/runs" in line


def test_report_out_that_is_a_folder(run_copy, tmp_path, capsys):
    (tmp_path / "report.html").mkdir()
    line = one_error(capsys, ["report", "--runs-dir", str(run_copy), "--out", str(tmp_path / "report.html")])
    assert "report.html" in line and "is a folder" in line


def test_cache_folder_that_is_a_file(tiny_root, tmp_path, monkeypatch, capsys):
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("COMPETITION_CACHE", str(tmp_path / "cachefile"))
    line = one_error(capsys, ["data-info", "--data", str(tiny_root)])
    assert "cachefile" in line


# --------------------------------------------------------------------------- bad content found early


def test_duplicate_file_name_in_test_json_fails_data_info(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    test = json.loads((root / "test.json").read_text())
    test["images"][1]["file_name"] = test["images"][0]["file_name"]
    (root / "test.json").write_text(json.dumps(test))
    line = one_error(capsys, ["data-info", "--data", str(root)])
    assert "test.json" in line and "duplicate file_name 'batch_03/t0.jpg'" in line


def test_truncated_test_image_fails_data_info(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    path = root / "batch_03" / "t1.jpg"
    path.write_bytes(path.read_bytes()[:300])
    line = one_error(capsys, ["data-info", "--data", str(root)])
    assert "t1.jpg" in line and "cannot read image" in line


@pytest.mark.parametrize("field", ["image_id", "category_id"])
def test_a_list_where_an_id_belongs(field, tmp_path, capsys):
    coco = tiny_coco()
    coco["annotations"][0][field] = [coco["annotations"][0][field]]
    root = build_root(tmp_path / "data", coco)
    line = one_error(capsys, ["data-info", "--data", str(root)])
    assert "annotation id 1" in line and f"{field} '[" in line and "is not an id" in line


def test_a_worker_traceback_is_reduced_to_its_message():
    wrapped = UserError(
        "Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ncompetition.core.errors.UserError: /d/t1.jpg: cannot read image (truncated)'
    )
    assert user_message(wrapped) == "/d/t1.jpg: cannot read image (truncated)"


# --------------------------------------------------------------------------- edge settings


def test_batch_size_one_with_pooled_batch_norm_fails_the_run_in_one_line(tiny_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    line = one_error(capsys, ["train", "deeplabv3", "--data", str(tiny_root), "--runs-dir", str(runs),
                              "--batch-size", "1", "--epochs", "1", "--folds", "2", "--image-size", "32",
                              "--set", "encoder=resnet18", "--set", "encoder_weights=null",
                              "--set", "num_workers=0"])  # fmt: skip
    assert "--batch-size 1" in line and "at least 2 images per batch" in line
    (run,) = runs.iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "at least 2 images" in info["reason"]


# --------------------------------------------------------------------------- randomly corrupted COCO files


def _paths(node, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _swapped(value, rng):
    """Another JSON type, an out-of-range number, or a deep/huge value in place of `value`."""
    choices = ["text", -1, 0, 2**63, 1e308, -0.5, None, True, [value], {"v": value}, [], {}, "", [[[[[]]]]]]
    return choices[rng.integers(len(choices))]


def corrupt(coco: dict, rng: np.random.Generator) -> tuple[dict, str]:
    """A copy of `coco` with one random fault: a value's type swapped or out of range, a field dropped, a record
    duplicated; and what was done."""
    coco = json.loads(json.dumps(coco))
    places = [(path, value) for path, value in _paths(coco) if path]
    if rng.random() < 0.6:  # records and their fields more often than polygon coordinates (most of the leaves)
        places = [(path, value) for path, value in places if len(path) <= 3]
    path, value = places[rng.integers(len(places))]
    parent = coco
    for key in path[:-1]:
        parent = parent[key]
    kind = rng.choice(["swap", "drop", "duplicate"])
    if kind == "drop":
        del parent[path[-1]]
    elif kind == "duplicate" and isinstance(parent, list):
        parent.append(json.loads(json.dumps(value)))
    else:
        parent[path[-1]] = _swapped(value, rng)
        kind = "swap"
    return coco, f"{kind} {'.'.join(map(str, path))}"


def corrupted_run(capsys, tmp_path: Path, argv: list[str], what: str) -> None:
    """The command either works (the fault did not matter) or fails with one line; no traceback; nothing
    written outside the runs folder and the cache."""
    before = {p for p in files_under(tmp_path) if "runs" not in p.parts and "cache" not in p.parts}
    got = main(argv)
    err = capsys.readouterr().err
    assert got in (0, 1, 2), (what, got, err)
    assert "Traceback" not in err, (what, err)
    if got:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, (what, err)
    after = {p for p in files_under(tmp_path) if "runs" not in p.parts and "cache" not in p.parts}
    assert after <= before, (what, sorted(map(str, after - before)))


@pytest.mark.parametrize("seed", range(6))
def test_randomly_corrupted_coco_files_never_trace_back(seed, tmp_path, capsys):
    from competition.data import write_sample_dataset

    rng = np.random.default_rng(seed)
    root = write_sample_dataset(tmp_path / "sample", n_train=8, n_test=3, size=32)
    clean = {name: json.loads((root / f"{name}.json").read_text()) for name in ("train_all", "test")}
    test_ids = [im["file_name"] for im in clean["test"]["images"]]
    csv = tmp_path / "sub.csv"
    write_submission(csv, test_ids, np.zeros((len(test_ids), 256, 256), dtype=np.uint8))
    gt = tmp_path / "gt.json"
    for case in range(12):  # data-info on a corrupted train_all.json or test.json
        name = ["train_all", "test"][case % 2]
        broken, what = corrupt(clean[name], rng)
        (root / f"{name}.json").write_text(json.dumps(broken))
        corrupted_run(capsys, tmp_path, ["data-info", "--data", str(root), "--folds", "2"], f"data-info {what}")
        (root / f"{name}.json").write_text(json.dumps(clean[name]))
    for case in range(4):  # score against a corrupted ground truth (test images with train_all's annotations)
        truth = {**clean["test"], "annotations": []}
        broken, what = corrupt(truth if case % 2 else clean["train_all"], rng)
        gt.write_text(json.dumps(broken))
        corrupted_run(capsys, tmp_path, ["score", str(csv), "--gt", str(gt), "--data", str(root)], f"score {what}")
    broken, what = corrupt(clean["train_all"], rng)  # one train: most faults end it before training
    (root / "train_all.json").write_text(json.dumps(broken))
    argv = ["train", "unet", "--data", str(root), "--runs-dir", str(tmp_path / "runs"), "--folds", "2",
            "--epochs", "1", "--image-size", "32", "--set", "encoder=resnet18", "--set", "encoder_weights=null",
            "--set", "num_workers=0", "--set", "overlays=0"]  # fmt: skip
    corrupted_run(capsys, tmp_path, argv, f"train {what}")


def test_the_image_cache_scales_16_bit_images_as_read_image_does(tmp_path):
    from competition.data import DataRoot, read_image
    from competition.data.images import DecodeEachTime

    root = build_root(tmp_path / "data")
    data16 = (np.arange(24 * 32).reshape(24, 32) * 85).astype(np.uint16)
    Image.fromarray(data16).save(root / "batch_01_vt" / "b.png")
    coco = DataRoot(root).coco("train_all")
    cached = DecodeEachTime(root, coco.path, coco.images, (24, 32))[3]  # what training reads (before: clipped)
    assert np.array_equal(cached, np.asarray(read_image(root, coco.by_id[3], coco.path)))
    assert (cached == 255).mean() < 0.05


def test_a_working_directory_where_submissions_cannot_be_written(run_copy, monkeypatch, capsys):
    monkeypatch.chdir("/proc")  # submissions/ is made in the working directory; nothing can be created here
    line = one_error(capsys, ["predict", "run-a", "--runs-dir", str(run_copy), "--device", "cpu"])
    assert "submissions" in line and "nothing was written there" in line


def test_a_search_space_that_is_a_fifo(tiny_root, tmp_path, capsys):
    make_fifo(tmp_path / "space.yaml")
    line = one_error(capsys, ["search", "unet", "--data", str(tiny_root), "--runs-dir", str(tmp_path / "runs"),
                              "--space", str(tmp_path / "space.yaml")])  # fmt: skip
    assert "space.yaml" in line and "not a regular file" in line
