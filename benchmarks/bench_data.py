"""Data loading and CSV writing: the harness against the seed baseline it replaces.

(a) Masks from the on-disk cache (competition.data.masks) vs pycocotools rendering every item's mask
    (`mask = np.maximum(coco.annToMask(ann) * value, mask)`), over every train_all image.
(b) Full training items at 256 and 512 px (`--sizes`), over every train_all image, three pipelines side by
    side: seed-style (PIL decode, resize, random scale and crop, flip, torchvision ColorJitter, to float,
    normalise, per item, pycocotools mask); the harness decoding every epoch (`image_cache=false`: decode and
    resize, augmentation on uint8 per item, to float and normalised per batch of 8); the harness
    reading the decode-once image cache (competition.data.images). The cache is cold at first: its size, build
    time, re-open time and first-read check time are printed.
(c) An 837-row submission CSV: competition.submit.write_submission vs the baseline's per-row
    `' '.join(str(e) for e in mask.tolist())` written with pandas; both files must be byte-identical.

    .venv/bin/python benchmarks/bench_data.py [--data DIR] [--repeats 3] [--sizes 256 512]
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import io
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pycocotools.coco import COCO
from torchvision import tv_tensors
from torchvision.transforms import v2

from competition.core.config import resolve
from competition.core.geometry import SUBMISSION_SIZE
from competition.core.machine import usable_cores
from competition.data import (
    MEAN,
    STD,
    ClassTable,
    DataRoot,
    DecodeEachTime,
    MaskStore,
    SegmentationDataset,
    image_store,
    normalise,
    read_image,
    train_transform,
)
from competition.submit import HEADER, write_submission

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trashcan-mini"
CSV_ROWS, CSV_CLASSES = 837, 12
BATCH = 8  # the harness normalises per batch (on the training device; here the CPU)


class RenderEveryItem:
    """The seed baseline's masks: one pycocotools COCO index, every mask rendered again on each access."""

    def __init__(self, json_path: Path, classes: ClassTable):
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            self.coco = COCO(str(json_path))
        self.value_of = classes.value_of

    def __getitem__(self, image_id: int) -> np.ndarray:
        info = self.coco.loadImgs(image_id)[0]
        mask = np.zeros((info["height"], info["width"]), dtype=np.uint8)
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id)):
            mask = np.maximum(self.coco.annToMask(ann) * self.value_of[ann["category_id"]], mask)
        return mask


def race(fns: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Best seconds of each function: one untimed warm-up call each, then `repeats` rounds that time each
    function in turn (interleaved, so a busy neighbour slows every contender alike)."""
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def machine_info() -> list[str]:
    """CPU, torch and device lines for a benchmark's header."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    usable = usable_cores()
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu (no CUDA device)"
    return [
        f"cpu: {cpu}, {os.cpu_count()} cores ({usable} usable), torch threads {torch.get_num_threads()}",
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}",
        f"device: {device}; load average {os.getloadavg()[0]:.2f} (1 min)",
    ]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])


def seed_transform(size: int) -> v2.Transform:
    """The seed-style per-item pipeline (the harness's transforms before the image cache): resize, random scale
    and crop, flip, torchvision ColorJitter, to float, normalise, all on one item on the CPU."""
    cfg = resolve(flags={"image_size": size})
    s = cfg["aug_color"]
    lo, hi = max(8, int(size * cfg["aug_scale_min"])), max(9, int(size * cfg["aug_scale_max"]) + 1)
    return v2.Compose([
        v2.Resize((size, size), antialias=True),
        v2.RandomResize(lo, hi, antialias=True),
        v2.RandomCrop((size, size), pad_if_needed=True, fill={tv_tensors.Mask: cfg["ignore_index"], "others": 0}),
        v2.RandomHorizontalFlip(cfg["aug_hflip"]),
        v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4)),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(MEAN, STD),
    ])  # fmt: skip


def bench_masks(root: Path, repeats: int) -> tuple[list[list[object]], str, RenderEveryItem, MaskStore]:
    """A row (masks only: baseline items/s, cached items/s, speedup), a note on the one-off mask cache build."""
    data = DataRoot(root)
    coco = data.coco("train_all")
    classes = data.classes()
    start = time.perf_counter()
    cached = data.masks("train_all", classes)  # the cache folder is empty: this renders every mask once
    build = time.perf_counter() - start
    baseline = RenderEveryItem(coco.path, classes)
    ids = coco.image_ids
    for image_id in ids:  # the baseline renders the same masks the cache holds
        assert np.array_equal(baseline[image_id], cached[image_id]), f"masks differ for image {image_id}"
    slow, fast = (
        len(ids) / s for s in race([lambda m=m: [np.array(m[i]) for i in ids] for m in (baseline, cached)], repeats)
    )
    per_image = build / len(ids) * 1000
    note = f"one-off mask cache build (first render of {len(ids)} masks): {build:.2f} s ({per_image:.2f} ms/image)"
    return [["masks only", f"{slow:,.0f}", f"{fast:,.0f}", f"{fast / slow:.2f}x"]], note, baseline, cached


def bench_items(
    root: Path, size: int, repeats: int, seed_masks: RenderEveryItem, masks: MaskStore
) -> tuple[list[object], str]:
    """Full training items per second at `size`: the seed-style pipeline, the harness decoding every epoch
    (image_cache=false), and the harness from the decode-once cache; a note on the cache's build."""
    coco = DataRoot(root).coco("train_all")
    cfg = resolve(flags={"image_size": size})
    start = time.perf_counter()
    store = image_store(root, coco.path, coco.images, (size, size))  # cold: decodes and resizes every image
    build = time.perf_counter() - start
    start = time.perf_counter()
    image_store(root, coco.path, coco.images, (size, size))  # warm: hashes every file, opens the index
    reopen = time.perf_counter() - start
    start = time.perf_counter()
    checked = [store[im.id] for im in coco.images]  # the first read in a process checks each entry's crc32
    check = time.perf_counter() - start
    mib = (store.folder / "pixels.u8").stat().st_size / 2**20
    transform = seed_transform(size)

    def seed_style() -> None:
        for im in coco.images:
            pixels = np.asarray(read_image(root, im, coco.path))
            image = tv_tensors.Image(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
            transform(image, tv_tensors.Mask(torch.from_numpy(seed_masks[im.id].astype(np.int64))))

    def harness(pixels) -> Callable[[], None]:
        dataset = SegmentationDataset(root, coco.path, coco.images, masks, train_transform(cfg), "train", pixels=pixels)

        def run() -> None:
            for first in range(0, len(dataset), BATCH):
                items = [dataset[i] for i in range(first, min(first + BATCH, len(dataset)))]
                normalise(torch.stack([image for image, _ in items]))
                torch.stack([mask for _, mask in items]).long()

        return run

    torch.manual_seed(0)
    fns = [seed_style, harness(DecodeEachTime(root, coco.path, coco.images, (size, size))), harness(store)]
    seed, decoding, cached = (len(coco.images) / s for s in race(fns, repeats))
    row = [f"{size} px", f"{seed:,.0f}", f"{decoding:,.0f}", f"{cached:,.0f}", f"{cached / seed:.2f}x"]
    note = (
        f"image cache at {size} px: {mib:,.0f} MiB for {len(checked)} images; built in {build:.2f} s "
        f"({build / len(checked) * 1000:.1f} ms/image), reopened in {reopen:.3f} s (every file hashed), "
        f"first read with crc32 checks {check:.2f} s"
    )
    return row, note


def baseline_csv(path: Path, image_ids: Sequence[str], masks: Sequence[np.ndarray]) -> None:
    """The seed baseline's writer: a Python join per row, then pandas."""
    rows = [
        {"image_id": i, "PredictionString": " ".join(str(e) for e in m.flatten().tolist())}
        for i, m in zip(image_ids, masks, strict=True)
    ]
    pd.DataFrame(rows, columns=HEADER).to_csv(path, index=False, lineterminator="\n")


def bench_csv(repeats: int) -> list[list[object]]:
    """One row: baseline seconds, harness seconds, speedup; asserts the two files are byte-identical."""
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, CSV_CLASSES, (SUBMISSION_SIZE, SUBMISSION_SIZE), dtype=np.uint8) for _ in range(CSV_ROWS)]
    image_ids = [f"batch_{i // 100:02d}/{i:04d}.jpg" for i in range(CSV_ROWS)]
    with tempfile.TemporaryDirectory() as tmp:
        slow_path, fast_path = Path(tmp) / "baseline.csv", Path(tmp) / "harness.csv"
        slow, fast = race(
            [lambda: baseline_csv(slow_path, image_ids, masks), lambda: write_submission(fast_path, image_ids, masks)],
            repeats,
        )
        assert filecmp.cmp(slow_path, fast_path, shallow=False), "the two CSVs differ"
        size = fast_path.stat().st_size / 2**20
    what = f"write {CSV_ROWS}-row CSV ({CSV_CLASSES} classes, {size:.0f} MiB; files identical)"
    return [[what, f"{slow:.2f} s", f"{fast:.2f} s", f"{slow / fast:.1f}x"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="dataset root (default: trashcan-mini if present, else sample data)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after a warm-up; the best counts")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="training sizes of the item race")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker; 2 threads on a busy 2-core machine stall each other
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COMPETITION_CACHE"] = str(Path(tmp) / "cache")  # a cold cache: the first render is timed
        root = args.data
        if root is None and (REAL_DATA / "train_all.json").exists():
            root = REAL_DATA
        if root is None:
            from competition.data import write_sample_dataset

            root = write_sample_dataset(Path(tmp) / "sample-data")
        print("\n".join(machine_info()), flush=True)
        print(f"data: {root}; best of {args.repeats} after a warm-up\n", flush=True)
        loading, note, seed_masks, masks = bench_masks(Path(root), args.repeats)
        print(format_table(["masks, train_all", "pycocotools items/s", "cached items/s", "speedup"], loading))
        print(note + "\n", flush=True)
        rows, notes = [], []
        for size in args.sizes:
            row, size_note = bench_items(Path(root), size, args.repeats, seed_masks, masks)
            rows.append(row)
            notes.append(size_note)
        headers = ["full training item", "seed-style items/s", "decode each epoch", "decode-once cache", "cache/seed"]
        print(format_table(headers, rows))
        print("\n".join(notes) + "\n", flush=True)
        print(
            format_table(["submission CSV", "baseline", "write_submission", "speedup"], bench_csv(args.repeats)),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
