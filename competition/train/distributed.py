"""Data-parallel training of one run (setting `gpus`, `./run.sh train MODEL --gpus N`): N processes per fold.

The calling process is rank 0: it keeps the run folder's lock, the log, the trackers and the search's hooks,
and it alone validates and writes (checkpoints, out-of-fold files, metrics, results). `launch` starts ranks
1..N-1 (spawned processes that train the same folds) and joins a process group with them: NCCL on GPUs, one
per rank (cuda:0..N-1 of the visible devices), gloo on CPU. Each optimiser step sees the same global batch as
one process would (`batch_size` is the global batch; each rank takes its consecutive share of it), DDP averages
the gradients, and the logged loss is the global batch's mean.

Control flows one way: after each epoch and each fold, rank 0 (having validated, saved and run the hooks)
tells the others `agree(stop)`; when it fails, is pruned or interrupted it tells them to abort (or, killed,
leaves them: they exit when their parent is gone). A helper's own error reaches rank 0 through a queue and is
raised there as the run's error.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import BatchSampler, Sampler

from competition.core.errors import UsageError, UserError, first_line
from competition.core.machine import usable_cores
from competition.core.progress import ENV as PROGRESS_ENV

CONTINUE, STOP, ABORT = 0, 1, 2
TIMEOUT = datetime.timedelta(minutes=30)  # a collective waiting longer than this fails (rank 0's validation)
SEED_STRIDE = 7919  # rank r's augmentation and dropout streams: the single-process seed + r * this


class Aborted(Exception):
    """Raised in a helper rank when rank 0 stopped (pruned, interrupted or failed): the helper exits quietly."""


@dataclass
class Ranks:
    """This process's place in the run's process group (rank 0 of 1 without data parallelism)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def seed_offset(self) -> int:
        return self.rank * SEED_STRIDE

    def wrap(self, model: torch.nn.Module, cfg: dict[str, Any]) -> torch.nn.Module:
        """The module to train through: DistributedDataParallel over `model` with several ranks."""
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=int(cfg["freeze_encoder"]) > 0
        )

    def no_sync(self, net: torch.nn.Module, stepping: bool) -> contextlib.AbstractContextManager:
        """Gradient accumulation: no all-reduce on the backward passes that do not end in an optimiser step."""
        if self.world == 1 or stepping:
            return contextlib.nullcontext()
        return net.no_sync()

    def batch_loss(self, loss: torch.Tensor, count: int) -> tuple[float, int]:
        """The global batch's mean loss and its number of images (this rank's alone with one process)."""
        if self.world == 1:
            return loss.item(), count
        both = torch.stack([loss.detach().float() * count, torch.tensor(float(count), device=loss.device)])
        dist.all_reduce(both)
        total, n = both.tolist()
        return total / max(1.0, n), int(n)

    def shard(self, batches: BatchSampler) -> Sampler:
        return batches if self.world == 1 else ShardedBatches(batches, self.rank, self.world)

    def worker_init(self) -> Callable[[int], None] | None:
        """DataLoader workers' seeds follow the loader's generator, the same on every rank: offset per rank, so
        the ranks' augmentations differ as those of one process's batch do."""
        return None if self.seed_offset == 0 else functools.partial(_offset_seed, self.seed_offset)

    @contextlib.contextmanager
    def leading(self) -> Iterator[None]:
        """Around rank 0's own work between two `agree`s: if it raises, the other ranks are told to abort."""
        try:
            yield
        except BaseException:
            if self.world > 1 and self.main:
                with contextlib.suppress(Exception):
                    _broadcast(ABORT, self.device)
            raise

    def agree(self, stop: bool = False) -> bool:
        """Rank 0's decision (stop this fold's epochs, or go on) on every rank; Aborted where it gave up."""
        if self.world == 1:
            return stop
        code = _broadcast(STOP if stop else CONTINUE, self.device) if self.main else _broadcast(-1, self.device)
        if code == ABORT:
            raise Aborted
        return code == STOP


def _offset_seed(offset: int, worker: int) -> None:
    torch.manual_seed(torch.initial_seed() + offset)


def _broadcast(code: int, device: torch.device | None) -> int:
    on = device if device is not None and device.type == "cuda" else torch.device("cpu")
    t = torch.tensor([code], dtype=torch.int64, device=on)
    dist.broadcast(t, src=0)
    return int(t.item())


class ShardedBatches(Sampler):
    """Rank `rank`'s share of every global batch: consecutive, as equal as the batch allows. All ranks draw the
    same global order (the same sampler, the same seeded generator), so the union of the shards is the batch
    one process would take."""

    def __init__(self, batches: BatchSampler, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            base, extra = divmod(len(batch), self.world)
            start = self.rank * base + min(self.rank, extra)
            yield batch[start : start + base + (1 if self.rank < extra else 0)]


def check_gpus(cfg: dict[str, Any], workers: int = 1) -> None:
    """Refuse, before anything starts, a process count this machine or the settings cannot give."""
    n = int(cfg.get("gpus", 1))
    if n == 1:
        return
    if int(cfg["batch_size"]) % n:
        raise UsageError(f"--batch-size {cfg['batch_size']} is the global batch: it must divide by --gpus {n}")
    on_cuda = cfg["device"] != "cpu" and torch.cuda.is_available()
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if not on_cuda:
        if cfg["device"] != "cpu":
            raise UserError(f"--gpus {n}: this machine has no CUDA device; add --device cpu to train with {n} CPU "
                            "processes (gloo)")  # fmt: skip
        if cfg.get("sync_bn"):
            raise UsageError("setting sync_bn=true: PyTorch synchronises BatchNorm on GPUs only, not on CPU")
    elif torch.cuda.device_count() < n * workers:
        what = f"--gpus {n}" if workers == 1 else f"--workers {workers} x --gpus-per-trial {n}"
        raise UserError(f"{what}: needs {n * workers} CUDA devices, this machine has {torch.cuda.device_count()}")
    if cfg.get("sync_bn") and int(cfg.get("swa", 0)):
        raise UsageError("settings sync_bn=true and swa: SWA recomputes BatchNorm on rank 0 alone; use ema instead")


@contextlib.contextmanager
def launch(
    cfg: dict[str, Any], device: torch.device, helper: Callable[..., None], helper_args: tuple
) -> Iterator[Ranks]:
    """Rank 0 of a process group of `gpus` ranks: starts ranks 1..N-1 as `helper(ranks, *helper_args)`
    and yields this process's Ranks; on the way out the helpers are joined (or, after an error, stopped)."""
    n = int(cfg.get("gpus", 1))
    if n == 1:
        yield Ranks(0, 1, device)
        return
    cuda = device.type == "cuda"
    store = tempfile.mkdtemp(prefix="competition-ddp-")
    context = mp.get_context("spawn")
    errors = context.SimpleQueue()
    threads_before = torch.get_num_threads()
    helpers = []
    ok = False
    try:
        for rank in range(1, n):
            ranks = Ranks(rank, n, torch.device("cuda", rank) if cuda else torch.device("cpu"))
            p = context.Process(target=_helper_main, args=(helper, ranks, store, errors, os.getpid(), helper_args))
            p.start()
            helpers.append(p)
        main = Ranks(0, n, torch.device("cuda", 0) if cuda else torch.device("cpu"))
        _join_group(main, store)
        try:
            yield main
            ok = True
        except (KeyboardInterrupt, UserError):  # rank 0's own reason (or Ctrl-C): the helpers are stopped below
            raise
        except BaseException:
            reason = _first_error(errors, helpers)
            if reason:  # a collective failed because a helper did: say why
                raise UserError(reason) from None
            raise
        finally:
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
    finally:
        _stop(helpers, wait=ok)
        torch.set_num_threads(threads_before)
        shutil.rmtree(store, ignore_errors=True)


def _join_group(ranks: Ranks, store: str) -> None:
    cuda = ranks.device.type == "cuda"
    if cuda:
        torch.cuda.set_device(ranks.device)
    else:  # N processes share the cores
        torch.set_num_threads(max(1, usable_cores() // ranks.world))
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=f"file://{os.path.join(store, 'rendezvous')}",
        rank=ranks.rank, world_size=ranks.world, timeout=TIMEOUT,
    )  # fmt: skip


def _helper_main(helper: Callable[..., None], ranks: Ranks, store: str, errors, parent: int, args: tuple) -> None:
    """A helper rank: Ctrl-C is rank 0's to handle; the process ends when rank 0 is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent, store), daemon=True).start()
    os.environ[PROGRESS_ENV] = "0"  # no progress bars: rank 0 shows the run's
    try:
        _join_group(ranks, store)
        helper(ranks, *args)
    except Aborted:
        pass
    except BaseException as e:
        if _orphaned(parent, wait=2.0):  # the collective failed because rank 0 was killed
            _exit_orphan(store)
        errors.put(f"rank {ranks.rank}: {first_line(e)}")
        raise SystemExit(1) from None
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _watch_parent(parent: int, store: str) -> None:
    while not _orphaned(parent, wait=0.0):
        time.sleep(1.0)
    _exit_orphan(store)


def _orphaned(parent: int, wait: float) -> bool:
    """Rank 0 (this process's parent) is gone, or goes within `wait` seconds."""
    deadline = time.monotonic() + wait
    while os.getppid() == parent:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _exit_orphan(store: str) -> None:
    shutil.rmtree(store, ignore_errors=True)  # rank 0's own cleanup never ran
    os._exit(1)  # rank 0 was killed: nothing of this rank is written, so nothing is lost


def _first_error(errors, helpers: list) -> str | None:
    deadline = time.time() + 5.0  # a helper's error usually arrives just before rank 0's collective fails
    while errors.empty() and time.time() < deadline and any(p.is_alive() for p in helpers):
        time.sleep(0.1)
    return None if errors.empty() else errors.get()


def _stop(helpers: list, wait: bool) -> None:
    for p in helpers:
        p.join(timeout=60 if wait else 2)
    for p in helpers:
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()
