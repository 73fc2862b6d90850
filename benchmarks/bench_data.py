"""Data loading and CSV writing: the harness against the seed baseline it replaces.

(a) Masks from the on-disk cache (competition.masks) vs pycocotools rendering every item's mask
    (`mask = np.maximum(coco.annToMask(ann) * value, mask)`), alone and inside a full Dataset item
    (image decode + the training transforms + mask), over every train_all image.
(b) An 837-row submission CSV: competition.submission.write_submission vs the baseline's per-row
    `' '.join(str(e) for e in mask.tolist())` written with pandas; both files must be byte-identical.

    .venv/bin/python benchmarks/bench_data.py [--data DIR] [--repeats 3]
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

from competition.core.config import resolve
from competition.core.geometry import SUBMISSION_SIZE
from competition.data import ClassTable, DataRoot, SegmentationDataset, read_image, train_transform
from competition.submit import HEADER, write_submission

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trashcan-mini"
CSV_ROWS, CSV_CLASSES = 837, 12


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
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
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


def bench_loading(root: Path, repeats: int) -> tuple[list[list[object]], str]:
    """Rows (what, baseline items/s, cached items/s, speedup) and a note on the one-off cache build."""
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

    def masks_only(store) -> Callable[[], None]:
        return lambda: [np.array(store[i]) for i in ids]  # a copy: memory-mapped pages are really read

    def full_items(store) -> Callable[[], None]:
        dataset = SegmentationDataset(root, coco.path, coco.images, store, train_transform(resolve()), "train")

        def run() -> None:
            torch.manual_seed(0)  # the same random augmentations for both
            for i in range(len(dataset)):
                dataset[i]

        return run

    rows = []
    for what, make in (("masks only", masks_only), ("full item (decode + transforms + mask)", full_items)):
        slow, fast = (len(ids) / s for s in race([make(baseline), make(cached)], repeats))
        rows.append([what, f"{slow:,.0f}", f"{fast:,.0f}", f"{fast / slow:.2f}x"])
    decode = len(ids) / race([lambda: [read_image(root, im, coco.path) for im in coco.images]], repeats)[0]
    rows.append(["for scale: JPEG decode alone (PIL)", "", f"{decode:,.0f}", ""])
    per_image = build / len(ids) * 1000
    note = f"one-off cache build (first render of {len(ids)} masks): {build:.2f} s ({per_image:.2f} ms/image)"
    return rows, note


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
        loading, note = bench_loading(Path(root), args.repeats)
        print(
            format_table(["data loading, train_all", "pycocotools items/s", "cached items/s", "speedup"], loading),
            flush=True,
        )
        print(note + "\n", flush=True)
        print(
            format_table(["submission CSV", "baseline", "write_submission", "speedup"], bench_csv(args.repeats)),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
