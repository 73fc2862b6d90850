"""Study storage throughput: tiny trials from 2 worker processes on an SQLite study directly vs through the gRPC
storage proxy (`./run.sh storage-proxy`) in front of the same kind of file; trials/s per arm, arms alternated.

    .venv/bin/python benchmarks/bench_storage.py [--trials 100] [--workers 2] [--repeats 2]

A trial here is what the harness's storage traffic per trial looks like without the training: its params
suggested, 10 intermediate values reported, a few user attributes, the value. It measures the storage path
alone, the part that grows with the number of workers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(url: str, study: str, trials: int, times) -> None:
    import optuna

    from competition.search import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.load_study(study_name=study, storage=open_storage(url), sampler=optuna.samplers.RandomSampler())

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        trial.suggest_categorical("loss", ["ce", "dice"])
        for step in range(10):
            trial.report(x * step, step)
        trial.set_user_attr("run", f"run-{trial.number}")
        trial.set_user_attr("fold_scores", {"0": x, "1": x})
        return x

    start = time.perf_counter()
    s.optimize(objective, n_trials=trials)
    times.put(time.perf_counter() - start)  # the trials alone: not the process start and imports


def one_arm(url: str, study: str, trials: int, workers: int) -> float:
    import optuna

    from competition.search import open_storage

    optuna.create_study(study_name=study, storage=open_storage(url), direction="maximize")
    context = multiprocessing.get_context("spawn")
    times = context.SimpleQueue()
    procs = [context.Process(target=worker, args=(url, study, trials // workers, times)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        sys.exit(f"a worker failed on {url}")
    return trials / max(times.get() for _ in procs)  # the workers run side by side: the slower one's time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="trials per arm and repeat (all workers)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    port = free_port()
    proxied = tmp / "proxied"
    serve = [sys.executable, "-m", "competition", "storage-proxy", "--runs-dir", str(proxied), "--port", str(port)]
    proxy = subprocess.Popen(serve, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rates: dict[str, list[float]] = {"sqlite direct": [], "grpc proxy": []}
    try:
        for r in range(args.repeats):
            direct = f"sqlite:///{tmp / f'direct-{r}.db'}"
            rates["sqlite direct"].append(one_arm(direct, f"d{r}", args.trials, args.workers))
            rates["grpc proxy"].append(one_arm(f"grpc://127.0.0.1:{port}", f"p{r}", args.trials, args.workers))
    finally:
        proxy.terminate()
        proxy.wait()
    print(f"\n{args.trials} tiny trials per repeat, {args.workers} worker processes, {args.repeats} repeats (best)")
    print(f"{'storage':<15} {'trials/s':>9}  all repeats")
    for name, values in rates.items():
        print(f"{name:<15} {max(values):>9.1f}  {', '.join(f'{v:.1f}' for v in values)}")
    print(f"proxy / direct: x{max(rates['grpc proxy']) / max(rates['sqlite direct']):.2f}")


if __name__ == "__main__":
    main()
