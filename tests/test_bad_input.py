"""Bad input: exit code 1, one line naming the file and the record, nothing half-written.

Each case breaks the tiny dataset one way and runs `./run.sh data-info --data ROOT` in-process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from competition.cli import main
from tests.conftest import build_root, edited, tiny_coco


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def expect_error(capsys, root: Path, *fragments: str) -> str:
    code, _, err = run_cli(capsys, "data-info", "--data", str(root))
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 1, err
    assert len(lines) == 1 and len(err.strip().splitlines()) <= 3, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err
    return lines[0]


def broken(tmp_path: Path, mutate) -> Path:
    coco = tiny_coco()
    mutate(coco)
    return build_root(tmp_path / "data", coco)


def test_valid_root_passes(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "data-info", "--data", str(build_root(tmp_path / "data")), "--folds", "3")
    assert code == 0
    assert "General trash" in out and "folds" in out


def test_missing_json(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    (root / "train_all.json").unlink()
    expect_error(capsys, root, "train_all.json", "not found")


def test_invalid_json(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    (root / "train_all.json").write_text('{"images": [')
    expect_error(capsys, root, "train_all.json", "invalid JSON")


def test_missing_top_level_key(tmp_path, capsys):
    expect_error(capsys, edited(tmp_path, lambda c: c.pop("annotations")), "train_all.json", "'annotations'")


def test_missing_image_key(tmp_path, capsys):
    root = edited(tmp_path, lambda c: c["images"][1].pop("height"))
    expect_error(capsys, root, "train_all.json", "images[1]", "id 3", "'height'")


def test_missing_annotation_key(tmp_path, capsys):
    root = broken(tmp_path, lambda c: c["annotations"][0].pop("category_id"))
    expect_error(capsys, root, "train_all.json", "annotation id 1", "'category_id'")


def test_missing_image_file(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    (root / "batch_02_vt" / "c.jpg").unlink()
    expect_error(capsys, root, "c.jpg", "missing image file", "image id 7")


def test_corrupt_image(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    (root / "batch_01_vt" / "a.jpg").write_bytes(b"not a jpeg at all")
    expect_error(capsys, root, "a.jpg", "cannot read image", "image id 10")


def test_truncated_image_fails_clearly_when_decoded(tmp_path):
    from competition.core.errors import UserError
    from competition.data import DataRoot, read_image

    root = build_root(tmp_path / "data")
    path = root / "batch_01_vt" / "a.jpg"
    path.write_bytes(path.read_bytes()[:200])
    coco = DataRoot(root, check_images=False).coco("train_all")
    with pytest.raises(UserError, match="a.jpg.*image id 10"):
        read_image(root, coco.by_id[10], coco.path)


def test_image_size_differs_from_json(tmp_path, capsys):
    root = edited(tmp_path, lambda c: c["images"][2].update(width=40))
    expect_error(capsys, root, "c.jpg", "says 40x24", "image id 7")


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.jpg", "batch_01_vt/../../x.jpg"])
def test_file_name_escaping_root(tmp_path, capsys, name):
    root = edited(tmp_path, lambda c: c["images"][0].update(file_name=name))
    expect_error(capsys, root, "train_all.json", "image id 10", "escapes the dataset root")


def test_symlink_escaping_root(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    outside = tmp_path / "outside.jpg"
    (root / "batch_01_vt" / "a.jpg").rename(outside)
    (root / "batch_01_vt" / "a.jpg").symlink_to(outside)
    expect_error(capsys, root, "image id 10", "escapes the dataset root")


def test_unknown_category_id(tmp_path, capsys):
    root = broken(tmp_path, lambda c: c["annotations"][1].update(category_id=99))
    expect_error(capsys, root, "train_all.json", "annotation id 2", "unknown category_id 99")


def test_unknown_image_id(tmp_path, capsys):
    root = broken(tmp_path, lambda c: c["annotations"][1].update(image_id=12345))
    expect_error(capsys, root, "train_all.json", "annotation id 2", "unknown image_id 12345")


def test_polygon_with_two_points(tmp_path, capsys):
    root = broken(tmp_path, lambda c: c["annotations"][0].update(segmentation=[[1, 1, 5, 5]]))
    expect_error(capsys, root, "train_all.json", "annotation id 1", "2 points")


def test_duplicate_image_ids(tmp_path, capsys):
    root = broken(tmp_path, lambda c: c["images"][2].update(id=10))
    expect_error(capsys, root, "train_all.json", "image id 10", "duplicate")


def test_no_categories(tmp_path, capsys):
    def mutate(c):
        c["categories"] = []
        c["annotations"] = []

    expect_error(capsys, broken(tmp_path, mutate), "train_all.json", "no categories")


def test_missing_dataset_root(tmp_path, capsys):
    expect_error(capsys, tmp_path / "nowhere", "nowhere", "not found")
