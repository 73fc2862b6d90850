"""Fault table, inputs: broken COCO files, segmentations, image files, submissions and config files.

Each case runs a command in-process and expects exit 1 (2 for usage) with one `error:` line naming the file and
the record, no traceback, and nothing written; or, for inputs that are valid but unusual (grayscale, RGBA,
16-bit, EXIF-rotated, BOM, CRLF, quotes), a correct result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from competition.cli import main
from competition.data import DataRoot, read_image
from competition.submit import write_submission
from tests.conftest import build_root, edited, tiny_coco


def one_error(capsys, argv: list[str], code: int = 1) -> str:
    """Run the CLI; expect `code` and exactly one stderr line, `error: ...`, and return it."""
    got = main(argv)
    err = capsys.readouterr().err.strip()
    assert got == code, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def data_info_error(capsys, root: Path, *fragments: str) -> str:
    line = one_error(capsys, ["data-info", "--data", str(root)])
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not (Path.cwd() / "cache" / "masks").exists() or "rendering" not in line  # nothing rendered from it
    return line


# --------------------------------------------------------------------------- COCO files


def test_truncated_coco_file(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    raw = (root / "train_all.json").read_bytes()
    (root / "train_all.json").write_bytes(raw[: len(raw) // 2])
    data_info_error(capsys, root, "train_all.json", "invalid JSON")


def _set(path: str, value):
    def mutate(coco):
        keys = path.split(".")
        target = coco
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        target[int(last) if last.isdigit() else last] = value

    return mutate


WRONG_TYPES = {
    "images not a list": (_set("images", {"a": 1}), ["'images' must be a list"]),
    "image id a string": (_set("images.0.id", "10"), ["images[0]", "is not an integer"]),
    "width a string": (_set("images.1.width", "32"), ["image id 3", "width '32'"]),
    "height zero": (_set("images.1.height", 0), ["image id 3", "height 0"]),
    "file_name a number": (_set("images.2.file_name", 7), ["image id 7", "file_name 7"]),
    "annotation a number": (_set("annotations.1", 5), ["annotations[1]", "expected an object"]),
    "category_id a string": (_set("annotations.1.category_id", "1"), ["annotation id 2", "unknown category_id '1'"]),
    "category without name": (_set("categories.1", {"id": 1}), ["categories[1]", "'name'"]),
    "duplicate category id": (_set("categories.2.id", 1), ["category id 1", "duplicate"]),
    "top level a list": (lambda c: c.clear(), ["missing key 'images'"]),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_coco_wrong_types_and_duplicates(case, tmp_path, capsys):
    mutate, fragments = WRONG_TYPES[case]
    data_info_error(capsys, edited(tmp_path, mutate), "train_all.json", *fragments)


def _segmentation(value):
    return _set("annotations.0.segmentation", value)


def _rle(counts, size=(24, 32)):
    return _segmentation({"size": list(size), "counts": counts})


MALFORMED_SEGMENTATIONS = {
    "empty list": (_segmentation([]), "empty segmentation"),
    "odd coordinates": (_segmentation([[1, 1, 5, 1, 5, 5, 9]]), "3.5 points"),
    "nested too deep": (_segmentation([[[1, 1], [5, 1], [5, 5]]]), "flat list of numbers"),
    "string coordinate": (_segmentation([[1, 1, "5", 1, 5, 5]]), "flat list of numbers"),
    "boolean coordinate": (_segmentation([[1, 1, True, 1, 5, 5]]), "flat list of numbers"),
    "NaN coordinate": (_segmentation([[1, 1, float("nan"), 1, 5, 5]]), "coordinate nan"),
    "huge coordinate": (_segmentation([[1, 1, 1e30, 1, 5, 5]]), "coordinate 1e+30"),
    "a string": (_segmentation("1 2 3"), "polygon list or an RLE object"),
    "null": (_segmentation(None), "polygon list or an RLE object"),
    "RLE without counts": (_segmentation({"size": [24, 32]}), "needs 'counts' and 'size'"),
    "RLE of another size": (_rle([768], (32, 24)), "RLE size [32, 24] differs"),
    "RLE negative run": (_rle([-5, 773]), "non-negative integers"),
    "RLE runs too short": (_rle([10, 5]), "cover 15 pixels, the image has 768"),
    "RLE garbage string": (_rle("garbage!!"), "not a valid compressed RLE string"),
    "RLE string too short": (_rle("52"), "the image has 768"),
    "RLE counts a number": (_rle(768), "list of run lengths or a non-empty compressed string"),
}


@pytest.mark.parametrize("case", list(MALFORMED_SEGMENTATIONS))
def test_malformed_segmentations(case, tmp_path, capsys):
    """pycocotools would decode most of these into garbage masks, or exhaust memory (NaN), without a word."""
    mutate, fragment = MALFORMED_SEGMENTATIONS[case]
    data_info_error(capsys, edited(tmp_path, mutate), "train_all.json", "annotation id 1", fragment)


def test_valid_rle_forms_still_pass(tmp_path, capsys):
    """Both RLE forms of tiny_coco (compressed, uncompressed) pass the new checks."""
    coco = tiny_coco()
    assert isinstance(coco["annotations"][2]["segmentation"]["counts"], str)
    assert isinstance(coco["annotations"][3]["segmentation"]["counts"], list)
    assert main(["data-info", "--data", str(build_root(tmp_path / "data", coco)), "--folds", "2"]) == 0


# --------------------------------------------------------------------------- image files


def test_grayscale_and_rgba_images_are_read_as_rgb(tmp_path):
    root = build_root(tmp_path / "data")  # its images are RGB, RGBA and L in turn
    data = DataRoot(root)
    coco = data.coco("train_all")
    modes = [Image.open(root / im.file_name).mode for im in coco.images]
    assert sorted(modes) == ["L", "RGB", "RGBA"]
    for im in coco.images:
        pixels = np.asarray(read_image(root, im, coco.path))
        assert pixels.shape == (im.height, im.width, 3) and pixels.dtype == np.uint8


def test_16_bit_image_is_scaled_not_clipped(tmp_path):
    root = build_root(tmp_path / "data")
    data16 = (np.arange(24 * 32).reshape(24, 32) * 85).astype(np.uint16)  # 0 .. 65195
    path = root / "batch_01_vt" / "b.png"
    Image.fromarray(data16).save(path)
    coco = DataRoot(root).coco("train_all")  # the size check passes
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(read_image(root, coco.by_id[3], coco.path))
    assert pixels.shape == (24, 32, 3)
    expected = np.clip(data16 / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(pixels[..., 0], expected)  # PIL's own conversion makes 99% of it 255
    assert (pixels == 255).mean() < 0.05


def exif_rotated(path: Path, width: int, height: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (width, height), (10, 20, 30)).save(path, exif=exif)


def test_exif_rotated_image_keeps_its_stored_pixels(tmp_path, capsys):
    root = build_root(tmp_path / "data")
    exif_rotated(root / "batch_01_vt" / "a.jpg", 32, 24)  # stored 32x24, as the JSON says
    coco = DataRoot(root).coco("train_all")
    assert np.asarray(read_image(root, coco.by_id[10], coco.path)).shape == (24, 32, 3)


def test_exif_rotated_image_with_the_turned_size_in_json(tmp_path, capsys):
    root = edited(tmp_path, lambda c: c["images"][2].update(width=24, height=32))
    exif_rotated(root / "batch_02_vt" / "c.jpg", 32, 24)
    data_info_error(capsys, root, "c.jpg", "says 24x32", "image id 7", "EXIF orientation")


# --------------------------------------------------------------------------- submissions


@pytest.fixture
def submission(tmp_path):
    """A dataset root and the lines of a valid submission for its 2 test images."""
    root = build_root(tmp_path / "data")
    ids = [im.file_name for im in DataRoot(root).coco("test").images]
    path = tmp_path / "ok.csv"
    write_submission(path, ids, [np.full((256, 256), i, dtype=np.uint8) for i in range(len(ids))])
    return root, path.read_text().splitlines(), ids


def check(capsys, root: Path, path: Path) -> tuple[int, list[str]]:
    code = main(["check", str(path), "--data", str(root)])
    return code, [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("data: ")]


SUBMISSION_FORMS = {  # valid, written differently
    "BOM": lambda ls: "\ufeff" + "\n".join(ls) + "\n",
    "CRLF": lambda ls: "\r\n".join(ls) + "\r\n",
    "quoted fields": lambda ls: "\n".join([ls[0], *(",".join(f'"{v}"' for v in line.split(",")) for line in ls[1:])]),
}


@pytest.mark.parametrize("case", list(SUBMISSION_FORMS))
def test_submission_forms_that_are_valid(case, submission, tmp_path, capsys):
    root, lines, _ = submission
    path = tmp_path / "sub.csv"
    path.write_bytes(SUBMISSION_FORMS[case](lines).encode())
    code, err = check(capsys, root, path)
    assert code == 0, err


SUBMISSION_ERRORS = {
    "extra column": (lambda ls, ids: [ls[0], ls[1] + ",x", ls[2]], "3 fields, expected 2"),
    "duplicate id": (lambda ls, ids: [*ls, ls[1]], "image_id {0}): duplicate of line 2"),
    "missing id": (lambda ls, ids: ls[:2], "1 test images have no row: {1}"),
    "unknown id": (lambda ls, ids: [*ls, ls[1].replace(ids[0], "x.jpg")], "not a test image"),
}


@pytest.mark.parametrize("case", list(SUBMISSION_ERRORS))
def test_submission_errors_name_the_line(case, submission, tmp_path, capsys):
    root, lines, ids = submission
    edit, fragment = SUBMISSION_ERRORS[case]
    path = tmp_path / "sub.csv"
    path.write_text("\n".join(edit(lines, ids)) + "\n")
    code, err = check(capsys, root, path)
    assert code == 1 and len(err) == 1 and err[0].startswith(str(path)), err
    assert fragment.format(*ids) in err[0], err


# --------------------------------------------------------------------------- config files


CONFIGS = {
    "JSON NaN": ('{"lr": NaN}', 2, "lr='NaN': expected a number"),
    "YAML infinity": ("weight_decay: .inf\n", 2, "weight_decay=inf"),
    "wrong type": ("epochs: ten\n", 2, "epochs='ten'"),
    "list for a number": ('{"batch_size": [4]}', 2, "batch_size=[4]"),
    "unknown key": ("learning_rate: 0.1\n", 2, "unknown setting 'learning_rate'"),
    "not a mapping": ("- lr\n- 0.1\n", 1, "must be a mapping"),
    "YAML python tag": ("lr: !!python/object/apply:os.system ['touch PWNED']\n", 1, "not valid YAML/JSON"),
    "YAML python name tag": ("lr: !!python/name:os.system\n", 1, "not valid YAML/JSON"),
    "pseudo set outside runs/": ("pseudo: ../../etc\n", 1, "not a plain name"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_config_files(case, tmp_path, capsys):
    text, code, fragment = CONFIGS[case]
    config = tmp_path / "c.yaml"
    config.write_text(text)
    root = build_root(tmp_path / "data")
    args = ["train", "unet", "--data", str(root), "--config", str(config), "--runs-dir", str(tmp_path / "runs"),
            "--epochs", "1", "--folds", "2", "--image-size", "32", "--set", "num_workers=0"]  # fmt: skip
    line = one_error(capsys, args, code)
    assert fragment in line and (str(config) in line or "pseudo" in line), line
    assert not (tmp_path / "PWNED").exists() and not (Path.cwd() / "PWNED").exists()
    assert not list((tmp_path / "runs").glob("*/fold_0/best.pt"))  # nothing trained


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['touch PWNED']", "!!python/name:os.system"])
def test_search_space_yaml_tags_never_run(tag, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(f"lr: {tag}\n")
    line = one_error(capsys, ["search", "unet", "--space", str(space), "--runs-dir", str(tmp_path / "runs")])
    assert str(space) in line and not (Path.cwd() / "PWNED").exists()
