"""A fresh process's start: seconds to import the harness and build a model, with timm kept from importing W&B
(competition/core/imports.py, the default) and without (the hook removed after `import competition`).

    .venv/bin/python benchmarks/bench_startup.py [--model unet] [--repeats 5]

The two arms alternate `--repeats` times, each a new interpreter with its own TMPDIR; the table gives each arm's
mean and standard deviation, whether W&B was imported, and the W&B folders left in TMPDIR by a process that
then ends by os._exit (as kill -9 or the OOM killer would end it: no exit handlers run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = """import sys, os
from competition.core.imports import KeepOut
if {unhook}:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, KeepOut)]
import models
models.create_model({model!r}, 12)
print("wandb" in sys.modules, flush=True)
os._exit(0)
"""


def one_start(model: str, hooked: bool) -> tuple[float, bool, int]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TMPDIR": tmp, "COMPETITION_OFFLINE": "1"}
        code = CODE.format(unhook=not hooked, model=model)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"bench_startup: the process failed:\n{done.stderr[-2000:]}")
        left = sum("wandb" in name for name in os.listdir(tmp))
    return seconds, done.stdout.strip().splitlines()[-1] == "True", left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    arms = {"timm kept from W&B (default)": True, "timm imports W&B": False}
    seen: dict[str, list[tuple[float, bool, int]]] = {name: [] for name in arms}
    one_start(args.model, True)  # warm the file cache
    for r in range(args.repeats):
        for name, hooked in arms.items():
            seen[name].append(one_start(args.model, hooked))
            print(f"repeat {r + 1}/{args.repeats} {name}: {seen[name][-1][0]:.2f} s", file=sys.stderr)
    print(f"\nimport competition + models, create_model({args.model!r}): {args.repeats} alternating repeats\n")
    print("| arm | seconds (mean +- sd) | W&B imported | W&B folders left after os._exit |")
    print("|---|---|---|---|")
    for name, rows in seen.items():
        times = [t for t, _, _ in rows]
        print(f"| {name} | {statistics.mean(times):.2f} +- {statistics.stdev(times):.2f} | "
              f"{'yes' if all(w for _, w, _ in rows) else 'no'} | {max(n for _, _, n in rows)} |")  # fmt: skip
    pairs = zip(seen["timm imports W&B"], seen["timm kept from W&B (default)"], strict=True)
    saved = [without[0] - kept[0] for without, kept in pairs]
    print(f"\nsaved per process (paired by repeat): {statistics.mean(saved):.2f} +- {statistics.stdev(saved):.2f} s")


if __name__ == "__main__":
    main()
