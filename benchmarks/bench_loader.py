"""The data path against the GPU: training items per second that the harness's own training loader
(competition.train.setup: decode-once image cache, augmentation on uint8 in the workers, normalised on the
device) delivers at --size, with the default worker count (num_workers=auto: 2 on CUDA) and with every core,
beside the training steps the GPU takes (bench_train.py's images/s, from its --json file): where the loader
delivers fewer items per second than the GPU trains, the GPU waits on data.

    .venv/bin/python benchmarks/bench_loader.py [--data ROOT] [--size 512] [--batch-size 8] [--batches 40]
                                                [--workers 2 16] [--against bench_train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from competition.core.config import resolve  # noqa: E402
from competition.core.machine import usable_cores  # noqa: E402
from competition.train.setup import loaders, prepare  # noqa: E402


def items_per_s(data: Path, size: int, batch: int, workers: int, batches: int, device: str) -> float:
    """Items/s of `batches` training batches of fold 0 after the first (worker start-up), across epochs."""
    flags = {"image_size": size, "batch_size": batch, "num_workers": workers, "folds": 2, "seed": 0}
    cfg = resolve(models.get_spec("unet").defaults, flags=flags | {"device": device})
    cfg.update(model="unet", data=str(data))
    with tempfile.TemporaryDirectory() as runs:
        setup = prepare(cfg, Path(runs), lambda _: None)
        train, _, _ = loaders(setup, 0)
        seen, start = -1, 0.0
        while seen < batches:
            for images, _ in train:
                if seen < 0:
                    if images.device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                seen += 1
                if seen == batches:
                    break
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        return batches * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    from bench_data import format_table, machine_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="dataset root (default: the embedded sample, written to a tmp dir)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="timed batches after the first")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts (default: 2 = CUDA's default, all cores)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--against", type=Path, help="bench_train.py --json output: the GPU's images/s beside")
    args = parser.parse_args(argv)
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    workers = args.workers or sorted({2, usable_cores()})
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("COMPETITION_CACHE", str(Path(tmp) / "cache"))
        data = args.data
        if data is None:
            from competition.data import write_sample_dataset

            data = write_sample_dataset(Path(tmp) / "sample-data")
        print("\n".join(machine_info()))
        print(f"loader: {data}, {args.size} px, batch {args.batch_size}, {args.batches} timed batches, {device}\n")
        rows = [[f"{w} workers", f"{items_per_s(data, args.size, args.batch_size, w, args.batches, device):,.0f}"]
                for w in workers]  # fmt: skip
    print(format_table(["training loader", "items/s"], rows))
    if args.against and args.against.exists():
        trained = json.loads(args.against.read_text())
        best = {r["model"]: max((v for k, v in r.items() if k.endswith("images_per_s")), default=None)
                for r in trained["rows"]}  # fmt: skip
        fastest = max(float(r[1].replace(",", "")) for r in rows)
        print(f"\nGPU training at {trained['size']} px (bench_train, the fastest mode per model) vs the loader's "
              f"best {fastest:,.0f} items/s:")  # fmt: skip
        for model, rate in best.items():
            if rate is None:
                print(f"  {model:<8} every mode failed in bench_train")
                continue
            verdict = "the GPU waits on data" if rate > fastest else "the loader keeps up"
            print(f"  {model:<8} {rate:>8,.1f} images/s  loader/GPU {fastest / rate:5.2f}x  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
