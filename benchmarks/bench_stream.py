"""Memory of `predict` and `ensemble` against the number of test images: peak RSS and time per image.

For each test-set size a synthetic sample dataset with that many test images (and 8 training images) is
written and two tiny runs (unet/resnet18, random init, 2 folds, 1 epoch, 32 px) are trained on it; then, each
in a fresh process (so its peak RSS, `ru_maxrss`, is its own): `predict` of run A, then (run B predicted untimed)
`ensemble A B --weights equal`. Both stream by blocks, so peak memory should not grow with the test set.
Torch runs one thread: on a busy 2-core machine two threads made prediction about 10x slower.

    .venv/bin/python benchmarks/bench_stream.py [--sizes 200,2000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from competition.ensemble import ensemble_runs
from competition.predict import predict_run
what, runs, data, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
quiet = lambda _: None
start = time.perf_counter()
if what == "ensemble":
    ensemble_runs(["run-a", "run-b"], runs, "ens", "equal", data, out_dir=out, log=quiet)
else:
    predict_run(runs / what, data, out_dir=out, log=quiet)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(what: str, runs: Path, data: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(runs), str(data), str(out)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,2000", help="test-set sizes")
    parser.add_argument("--workdir", type=Path, help="where datasets and runs go (default: a temporary folder)")
    args = parser.parse_args()
    import torch

    import models
    from competition.core.config import resolve
    from competition.data import write_sample_dataset
    from competition.train import train_run

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        base = Path(tmp)
        print(f"{'command':<10} {'test images':>11} {'peak RSS MiB':>12} {'seconds':>8} {'ms/image':>9}")
        for n in (int(s) for s in args.sizes.split(",")):
            data = write_sample_dataset(base / f"data-{n}", n_train=8, n_test=n, size=32)
            runs = base / f"runs-{n}"
            for name, seed in (("run-a", 1), ("run-b", 2)):
                flags = {"folds": 2, "epochs": 1, "image_size": 32, "batch_size": 4, "num_workers": 0, "seed": seed}
                cfg = resolve(models.get_spec("unet").defaults, flags=flags | {"device": "cpu", "overlays": 0})
                cfg.update(model="unet", data=str(data), encoder="resnet18", encoder_weights=None)
                train_run(cfg, runs / name, lambda _: None)
            for what in ("run-a", "run-b", "ensemble"):
                result = child(what, runs, data, base / "submissions")
                if what != "run-b":
                    command = "predict" if what == "run-a" else "ensemble"
                    per = 1000 * result["seconds"] / n
                    print(f"{command:<10} {n:>11,} {result['peak_mib']:>12,.0f} {result['seconds']:>8.1f} {per:>9.1f}")
            shutil.rmtree(runs)
            shutil.rmtree(data)


if __name__ == "__main__":
    main()
