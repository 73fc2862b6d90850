"""Compact probabilities and the ensemble weight fit, on trained runs whose probabilities are float16 (run
folders of earlier versions).

(a) Storage and accuracy: every member's float16 out-of-fold probabilities are quantised to uint8 exactly as
the writer does, in a copy of the runs (other files hard-linked); the out-of-fold mIoU of each member's argmax
and of ensembles (equal weights, a fixed uneven weighting) is computed from both, and the differences printed.
(b) Speed: `--weights equal` against `--weights auto` (the weight fit, `fit_weights`, which is where they
differ), on the uint8 copy, alternated `--repeats` times, best of each; their ratio.

    .venv/bin/python benchmarks/bench_ensemble.py RUNS_DIR RUN RUN... [--data DIR] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from competition.core.fileio import write_json
from competition.data import DataRoot
from competition.ensemble.member_weights import fit_weights
from competition.ensemble.members import load_member
from competition.predict import quantise, read_probs, run_classes


def quantised_copy(runs_dir: Path, refs: list[str], out: Path) -> tuple[int, int]:
    """Copies of the runs with uint8 out-of-fold files; (float16 bytes, uint8 bytes) of those files."""
    before = after = 0
    for ref in refs:
        src = load_member(runs_dir, ref).dir
        dst = out / src.name
        shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("*.pt", "oof.*", "test"))
        for path in sorted(src.glob("fold_*/oof.npy")):
            stored = read_probs(path)
            if stored.array.dtype != np.float16:
                raise SystemExit(f"{path}: already {stored.array.dtype}; this benchmark needs float16 runs")
            target = dst / path.parent.name / "oof.npy"
            array = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=stored.array.shape)
            for start in range(0, len(stored), 16):
                array[start : start + 16] = quantise(stored.probabilities(slice(start, start + 16)))
            array.flush()
            write_json(target.with_suffix(".json"), {**stored.manifest, "dtype": "uint8", "levels": 255})
            before, after = before + path.stat().st_size, after + target.stat().st_size
    return before, after


def fit(runs_dir: Path, refs: list[str], data: str | None, spec: str, log=lambda _: None):
    members = [load_member(runs_dir, r) for r in refs]
    root = DataRoot(Path(data or members[0].cfg["data"]))
    classes = run_classes(members[0].dir, members[0].cfg, root)
    start = time.perf_counter()
    result = fit_weights(members, root, classes, spec, log)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    m = len(args.runs)
    uneven = ",".join(str(k + 1) for k in range(m))
    with tempfile.TemporaryDirectory(dir=args.runs_dir.parent) as tmp:
        copy = Path(tmp)
        before, after = quantised_copy(args.runs_dir, args.runs, copy)
        print(f"out-of-fold files of {m} members: float16 {before / 2**20:,.0f} MiB, uint8 {after / 2**20:,.0f} MiB")
        print(f"{'weights':<16} {'member/ensemble':<28} {'float16':>8} {'uint8':>8} {'uint8-f16':>10}")
        for spec in ("equal", uneven):
            old, _ = fit(args.runs_dir, args.runs, args.data, spec)
            new, _ = fit(copy, args.runs, args.data, spec)
            rows = [("ensemble", old.miou, new.miou)]
            if spec == "equal":
                rows += list(zip(args.runs, old.member_miou, new.member_miou, strict=True))
            for name, a, b in rows:
                print(f"{spec:<16} {name:<28} {a:>8.4f} {b:>8.4f} {b - a:>+10.5f}", flush=True)
        times: dict[str, list[float]] = {"equal": [], "auto": []}
        for _ in range(args.repeats):
            for spec in ("equal", "auto"):
                result, seconds = fit(copy, args.runs, args.data, spec, log=print if spec == "auto" else lambda _: None)
                times[spec].append(seconds)
                print(f"{spec}: {seconds:.1f} s, OOF mIoU {result.miou:.4f}, weights {np.round(result.weights, 3)}")
        eq, auto = min(times["equal"]), min(times["auto"])
        print(f"weight fit, best of {args.repeats}: equal {eq:.1f} s, auto {auto:.1f} s, auto/equal {auto / eq:.2f}x")


if __name__ == "__main__":
    main()
