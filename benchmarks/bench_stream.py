"""Memory of `predict` and `ensemble` against the number of test images: peak RSS and time per image.

Two tiny runs (unet/resnet18, random init, 2 folds, 1 epoch, 32 px) are trained on the synthetic sample data;
then for each test-set size a sample dataset with that many test images is written and, each in a fresh
process (so its peak RSS, `ru_maxrss`, is its own): `predict` of run A, then (run B predicted untimed)
`ensemble A B --weights equal`. Both stream by blocks, so peak memory should not grow with the test set.

    .venv/bin/python benchmarks/bench_stream.py [--sizes 200,2000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
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
    import models
    from competition.core.config import resolve
    from competition.data import write_sample_dataset
    from competition.train import train_run

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        base = Path(tmp)
        train_root = write_sample_dataset(base / "train-data", n_train=8, n_test=2, size=32)
        for name, seed in (("run-a", 1), ("run-b", 2)):
            flags = {"folds": 2, "epochs": 1, "image_size": 32, "batch_size": 4, "num_workers": 0, "seed": seed}
            cfg = resolve(models.get_spec("unet").defaults, flags=flags | {"device": "cpu", "overlays": 0})
            cfg.update(model="unet", data=str(train_root), encoder="resnet18", encoder_weights=None)
            train_run(cfg, base / "runs" / name, lambda _: None)
        print(f"{'command':<10} {'test images':>11} {'peak RSS MiB':>12} {'seconds':>8} {'ms/image':>9}")
        for n in (int(s) for s in args.sizes.split(",")):
            data = write_sample_dataset(base / f"data-{n}", n_train=8, n_test=n, size=32)
            for what in ("run-a", "run-b", "ensemble"):
                result = child(what, base / "runs", data, base / "submissions")
                if what != "run-b":
                    command = "predict" if what == "run-a" else "ensemble"
                    per = 1000 * result["seconds"] / n
                    print(f"{command:<10} {n:>11,} {result['peak_mib']:>12,.0f} {result['seconds']:>8.1f} {per:>9.1f}")
            for path in (base / "runs").glob("run-*/test"):
                for f in path.iterdir():
                    f.unlink()


if __name__ == "__main__":
    main()
