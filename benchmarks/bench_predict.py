"""Test-set prediction throughput (images/s): fcn8s and unet, with and without flip TTA.

Times `competition.predict.predict_probs` (the path `./run.sh predict` uses per fold) on random images:
model forward per TTA view, bilinear resize of logits to 256 x 256, softmax, view averaging. Random-init
weights (speed does not depend on them). On CUDA: bf16 autocast and channels_last as the harness runs them.

    .venv/bin/python benchmarks/bench_predict.py [--device auto|cpu|cuda] [--size S] [--batch-size B] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import models
from competition.predict import parse_tta, pick_device, predict_probs


def throughput(model: torch.nn.Module, images: torch.Tensor, tta: str, steps: int, amp: bool) -> float:
    views = parse_tta(tta)
    predict_probs(model, images, views, amp=amp)  # warm-up
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        predict_probs(model, images, views, amp=amp)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--size", type=int, help="input size (default 512 on CUDA, 128 on CPU)")
    parser.add_argument("--batch-size", type=int, help="default 16 on CUDA, 4 on CPU")
    parser.add_argument("--steps", type=int, help="timed batches (default 20 on CUDA, 5 on CPU)")
    args = parser.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (512 if cuda else 128)
    batch = args.batch_size or (16 if cuda else 4)
    steps = args.steps or (20 if cuda else 5)
    if cuda:
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    print(f"device: {name}; torch {torch.__version__}; input {size}x{size}, batch {batch}, {steps} timed batches")
    print(f"{'model':<8} {'TTA':<6} {'images/s':>9}")
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    for model_name, settings in (("fcn8s", {}), ("unet", {"encoder": "resnet34"})):
        model, _ = models.create_model(model_name, 12, settings)
        model = model.to(device).eval().to(memory_format=torch.channels_last)
        for tta in ("none", "hflip"):
            print(f"{model_name:<8} {tta:<6} {throughput(model, images, tta, steps, amp=cuda):>9.2f}", flush=True)


if __name__ == "__main__":
    main()
