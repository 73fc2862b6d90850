"""Training throughput (images/s) and peak memory of fcn8s, fcn16s and unet (resnet34 encoder):
(A) bf16 autocast + channels_last, the harness defaults, vs (B) fp32 without them; with --compile also (C) = A
with torch.compile (`compile=true`), whose first-step compile time is reported on its own.

Real training steps on random batches (12 classes): model.train(), MixedLoss("ce"), AdamW, backward, step.
Each (model, mode) runs in a fresh process, so peak memory is its own: torch.cuda.max_memory_allocated on
CUDA, peak RSS (ru_maxrss) on CPU. The harness autocasts only on CUDA (competition.predict.autocast), so
on CPU mode A is channels_last alone.

    .venv/bin/python benchmarks/bench_train.py [--device auto|cpu|cuda] [--size S] [--batch-size B] [--steps N]
                                               [--compile]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from typing import Any

import torch

MODES = {"A": {"amp": True, "channels_last": True}, "B": {"amp": False, "channels_last": False}}
COMPILED = {"C": {"amp": True, "channels_last": True, "compile": True}}
NUM_CLASSES = 12


def peak_rss_mib() -> float:
    """This process's peak resident memory (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    model_name: str,
    amp: bool,
    channels_last: bool,
    device: str,
    size: int,
    batch: int,
    steps: int,
    warmup: int,
    compile: bool = False,
) -> dict[str, Any]:
    """Images/s of the median of `steps` timed training steps after `warmup` steps, and peak memory in MiB;
    with `compile`, the model is torch.compile'd and its first step (the compilation) is timed apart."""
    import models
    from competition.predict import autocast
    from competition.train import MixedLoss

    dev = torch.device(device)
    rss_start = peak_rss_mib()
    torch.manual_seed(0)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    model, _ = models.create_model(model_name, NUM_CLASSES, {"encoder": "resnet34"})
    model = model.to(dev)
    images = torch.randn(batch, 3, size, size, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, NUM_CLASSES, (batch, size, size), device=dev)
    if compile:
        model.compile()
    loss_fn = MixedLoss("ce").to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        with autocast(dev, amp):
            logits = model(images)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()  # the first step: with compile, the compilation
    sync(dev)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    sync(dev)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(dev)  # per-step timing: on CUDA this costs a little overlap, on a busy CPU it isolates stalls
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    if dev.type == "cuda":
        peak, what = torch.cuda.max_memory_allocated() / 2**20, "max_memory_allocated"
    else:
        peak, what = peak_rss_mib(), f"peak RSS ({rss_start:.0f} MiB before the model)"
    return {"images_per_s": batch / seconds, "peak_mib": peak, "memory": what, "compile_s": first - seconds}


def run_isolated(**kwargs: Any) -> dict[str, Any]:
    """`measure` in a fresh spawned process (its own peak memory, no state left by the previous config)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, kwds=kwargs)


def best_of(repeats: int, modes: dict, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The modes, alternated `repeats` times: the best throughput and the largest peak of each."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for mode, flags in modes.items():
            r = run_isolated(**kwargs, **flags)
            if mode in best:
                r = {**r, "images_per_s": max(r["images_per_s"], best[mode]["images_per_s"])}
                r["peak_mib"] = max(r["peak_mib"], best[mode]["peak_mib"])
            best[mode] = r
    return best


def mode_label(device: torch.device) -> str:
    """What mode A changes on this device."""
    if device.type == "cuda":
        return "bf16 autocast + channels_last"
    return "channels_last only (the harness autocasts to bf16 on CUDA only)"


def main(argv: list[str] | None = None) -> int:
    from bench_data import format_table, machine_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--size", type=int, help="square input size (default 512 on CUDA, 128 on CPU)")
    parser.add_argument("--batch-size", type=int, help="default 8 on CUDA, 4 on CPU")
    parser.add_argument("--steps", type=int, help="timed steps after the warm-up (default 20 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5 on CUDA, 1 on CPU)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate A and B this many times; keep the best")
    parser.add_argument("--models", default="fcn8s,fcn16s,unet", help="comma-separated registered models")
    parser.add_argument("--compile", action="store_true", help="also mode C: A with torch.compile")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    size = args.size or (512 if cuda else 128)
    batch = args.batch_size or (8 if cuda else 4)
    steps = args.steps or (20 if cuda else 3)
    warmup = max(1, args.warmup if args.warmup is not None else (5 if cuda else 1))
    modes = MODES | (COMPILED if args.compile else {})

    print("\n".join(machine_info()))
    print(
        f"training: {size}x{size}, batch {batch}, {NUM_CLASSES} classes, {warmup} warm-up + {steps} timed steps, "
        f"best of {args.repeats}\n"
    )
    rows, memory = [], ""
    for name in args.models.split(","):
        r = best_of(
            args.repeats, modes, model_name=name, device=str(device), size=size, batch=batch, steps=steps, warmup=warmup
        )
        a, b = r["A"], r["B"]
        memory = a["memory"]
        row = [
            name,
            f"{a['images_per_s']:.2f}",
            f"{b['images_per_s']:.2f}",
            f"{a['images_per_s'] / b['images_per_s']:.2f}x",
        ]
        row += [f"{a['peak_mib']:,.0f}", f"{b['peak_mib']:,.0f}"]
        if "C" in r:
            c = r["C"]
            row += [
                f"{c['images_per_s']:.2f}",
                f"{c['images_per_s'] / a['images_per_s']:.2f}x",
                f"{c['compile_s']:.1f}",
            ]
        rows.append(row)
    print(
        f"A: {mode_label(device)}; B: fp32, contiguous tensors"
        + ("; C: A + torch.compile" if args.compile else "")
        + "\n"
    )
    head = ["model", "A images/s", "B images/s", "A/B", "A peak MiB", "B peak MiB"]
    head += ["C images/s", "C/A", "C compile s"] if args.compile else []
    print(format_table(head, rows))
    print(f"images/s from the median step; memory: {memory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
