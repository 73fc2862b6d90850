"""Training throughput (images/s) and peak memory of fcn8s, fcn16s and unet (resnet34 encoder):
(A) bf16 autocast + channels_last, the harness defaults, vs (B) fp32 without them; on CUDA also (F) fp16
autocast + channels_last with a GradScaler (`amp=fp16`); with --compile also (C) = A with torch.compile
(`compile=true`), whose first-step compile time is reported on its own.

FLOPs per image are counted once per model (torch.utils.flop_counter over one fp32 forward + backward of a
1-image batch: the training step's matmul and convolution FLOPs), and the MFU is the achieved FLOP/s
(FLOPs/image x images/s) over the GPU's dense peak for the mode's dtype (PEAKS by device name: bf16/fp16
tensor cores; fp32 against TF32, which cuDNN convolutions use by default; --peak-tflops overrides).

Real training steps on random batches (12 classes): model.train(), MixedLoss("ce"), AdamW, backward, step.
Each (model, mode) runs in a fresh process, so peak memory is its own: torch.cuda.max_memory_allocated on
CUDA, peak RSS (ru_maxrss) on CPU. The harness autocasts only on CUDA (competition.predict.autocast), so
on CPU mode A is channels_last alone.

    .venv/bin/python benchmarks/bench_train.py [--device auto|cpu|cuda] [--size S] [--batch-size B] [--steps N]
                                               [--compile] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

MODES = {"A": {"amp": "auto", "channels_last": True}, "B": {"amp": "off", "channels_last": False}}
FP16 = {"F": {"amp": "fp16", "channels_last": True}}  # CUDA only
COMPILED = {"C": {"amp": "auto", "channels_last": True, "compile": True}}
NUM_CLASSES = 12
# dense peak TFLOP/s (no sparsity) by device-name substring, first match: bf16/fp16 tensor cores, tf32
PEAKS = (
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0}),
    ("H100 NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7}),  # SXM
    ("H200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0}),
    ("L40S", {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0}),
    ("A10G", {"bf16": 70.0, "fp16": 70.0, "tf32": 35.0}),
)


def peak_tflops(device: torch.device, dtype: str, override: float | None) -> float | None:
    """The device's dense peak for a dtype (bf16, fp16, tf32), or None where unknown (and on CPU)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[dtype] for key, peaks in PEAKS if key in name), None)


def count_flops(model: torch.nn.Module, size: int, device: torch.device) -> float:
    """FLOPs of one fp32 training step (forward + backward) per image, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.randn(1, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(images).float().mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def peak_rss_mib() -> float:
    """This process's peak resident memory (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    model_name: str,
    amp: str,
    channels_last: bool,
    device: str,
    size: int,
    batch: int,
    steps: int,
    warmup: int,
    compile: bool = False,
) -> dict[str, Any]:
    """Images/s of the median of `steps` timed training steps after `warmup` steps, peak memory in MiB and
    FLOPs per training image; with `compile`, the model is torch.compile'd and its first step (the
    compilation) is timed apart. amp=fp16 scales the loss (GradScaler), as the harness does."""
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
    flops = count_flops(model, size, dev)  # before channels_last and compile: the same count for every mode
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    images = torch.randn(batch, 3, size, size, device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, NUM_CLASSES, (batch, size, size), device=dev)
    if compile:
        model.compile()
    loss_fn = MixedLoss("ce").to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    model.train()

    def step() -> None:
        with autocast(dev, amp):
            logits = model(images)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

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
    return {"images_per_s": batch / seconds, "peak_mib": peak, "memory": what, "compile_s": first - seconds,
            "flops_per_image": flops}  # fmt: skip


def run_isolated(**kwargs: Any) -> dict[str, Any]:
    """`measure` in a fresh spawned process (its own peak memory, no state left by the previous config). A
    process pool that raises when its worker dies (a CUDA abort), where multiprocessing.Pool would wait forever."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, **kwargs).result()


def failure(e: BaseException) -> str:
    """One line for a mode that failed (a compile error, out of memory, a dead worker)."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:160]


def best_of(repeats: int, modes: dict, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The modes, alternated `repeats` times: the best throughput and the largest peak of each. A mode that
    fails is {"error": ...} and is not tried again; the other modes go on (a failed compile costs no table)."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeats):
        for mode, flags in modes.items():
            if "error" in best.get(mode, {}):
                continue
            try:
                r = run_isolated(**kwargs, **flags)
            except Exception as e:  # noqa: BLE001 - reported in the table, the script exits 1 at the end
                best[mode] = {"error": failure(e)}
                print(f"{kwargs['model_name']} mode {mode} failed: {best[mode]['error']}", flush=True)
                continue
            first = f", first step {r['compile_s']:.1f} s more" if flags.get("compile") else ""
            print(f"{kwargs['model_name']} mode {mode}: {r['images_per_s']:.2f} images/s, "
                  f"peak {r['peak_mib']:,.0f} MiB{first}", flush=True)  # fmt: skip
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
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense peak for every dtype (default: PEAKS)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here (bench_loader.py --against)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    size = args.size or (512 if cuda else 128)
    batch = args.batch_size or (8 if cuda else 4)
    steps = args.steps or (20 if cuda else 3)
    warmup = max(1, args.warmup if args.warmup is not None else (5 if cuda else 1))
    modes = MODES | (FP16 if cuda else {}) | (COMPILED if args.compile else {})
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtypes = {"A": "bf16" if bf16 else "fp16", "B": "tf32", "F": "fp16", "C": "bf16" if bf16 else "fp16"}

    print("\n".join(machine_info()))
    print(
        f"training: {size}x{size}, batch {batch}, {NUM_CLASSES} classes, {warmup} warm-up + {steps} timed steps, "
        f"best of {args.repeats}\n"
    )
    rows, records, memory, failed = [], [], "", []
    for name in args.models.split(","):
        r = best_of(
            args.repeats, modes, model_name=name, device=str(device), size=size, batch=batch, steps=steps, warmup=warmup
        )
        failed += [f"{name} {m}: {v['error']}" for m, v in r.items() if "error" in v]
        ok = {m: v for m, v in r.items() if "error" not in v}
        memory = next((v["memory"] for v in ok.values()), memory)
        flops = next((v["flops_per_image"] for v in ok.values()), float("nan"))

        def ips(mode: str, r: dict = ok) -> str:
            return f"{r[mode]['images_per_s']:.2f}" if mode in r else "failed"

        def mib(mode: str, r: dict = ok) -> str:
            return f"{r[mode]['peak_mib']:,.0f}" if mode in r else "-"

        def ratio(top: str, bottom: str, r: dict = ok) -> str:
            if top not in r or bottom not in r:
                return "-"
            return f"{r[top]['images_per_s'] / r[bottom]['images_per_s']:.2f}x"

        def mfu(mode: str, r: dict = ok, flops: float = flops) -> str:
            peak = peak_tflops(device, dtypes[mode], args.peak_tflops)
            if mode not in r:
                return "-"
            return "n/a" if peak is None else f"{flops * r[mode]['images_per_s'] / (peak * 1e12):.1%}"

        row = [name, f"{flops / 1e9:,.1f}", ips("A"), ips("B"), ratio("A", "B"), mib("A"), mib("B")]
        row += [mfu("A"), mfu("B")]
        if "F" in modes:
            row += [ips("F"), mib("F"), mfu("F")]
        if "C" in modes:
            compile_s = f"{ok['C']['compile_s']:.1f}" if "C" in ok else "-"
            row += [ips("C"), ratio("C", "A"), compile_s, mfu("C")]
        rows.append(row)
        records.append({"model": name, "flops_per_image": flops}
                       | {f"{m}_images_per_s": v["images_per_s"] for m, v in ok.items()}
                       | {f"{m}_peak_mib": v["peak_mib"] for m, v in ok.items()})  # fmt: skip
        if args.json:  # after every model: a run stopped at its time limit keeps the models it finished
            part = args.json.with_name(args.json.name + ".tmp")  # renamed: a kill never leaves half a file
            part.write_text(json.dumps({"device": str(device), "size": size, "batch": batch, "rows": records,
                                        "failed": failed}))  # fmt: skip
            part.replace(args.json)
    print(
        f"A: {mode_label(device)}; B: fp32, contiguous tensors"
        + ("; F: fp16 autocast + channels_last + GradScaler" if cuda else "")
        + ("; C: A + torch.compile" if args.compile else "")
        + "\n"
    )
    head = ["model", "GFLOP/image", "A images/s", "B images/s", "A/B", "A peak MiB", "B peak MiB", "A MFU", "B MFU"]
    head += ["F images/s", "F peak MiB", "F MFU"] if cuda else []
    head += ["C images/s", "C/A", "C compile s", "C MFU"] if args.compile else []
    print(format_table(head, rows))
    peak = {d: peak_tflops(device, d, args.peak_tflops) for d in ("bf16", "fp16", "tf32")}
    known = ", ".join(f"{d} {v:g}" for d, v in peak.items() if v) or "none known here (--peak-tflops)"
    print(f"images/s from the median step; memory: {memory}; GFLOP/image: one fp32 forward + backward "
          f"(torch.utils.flop_counter); MFU against dense peak TFLOP/s: {known} (B against TF32)")  # fmt: skip
    for line in failed:
        print(f"FAILED {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
