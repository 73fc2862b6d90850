"""Dense CRF (Krähenbühl & Koltun 2011: fully connected, Gaussian edge potentials, mean-field inference) on
the 256 x 256 submission grid, through pydensecrf2 (an optional extra: `pip install pydensecrf2`, a C++ build
of about a minute; `./run.sh setup` tries it and says when it fails).

The unary energy of class c at a pixel is minus its calibrated score (log(p_c + EPS) + offset_c, see
predict.decide), the pairwise terms a smoothness kernel (position only) and an appearance kernel (position and
RGB of the image resized to the grid exactly as the probabilities were), both Potts. The result is the
mean-field marginals Q [C, H, W]; the decision is their argmax.

pydensecrf holds the GIL, so inside a `processes()` block the images of a block go to spawned processes (spawn:
the parent may hold CUDA or OpenMP state a fork would copy), which end with the block; results are
deterministic and independent of the number of processes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from competition.core.errors import UserError
from competition.core.machine import usable_cores
from competition.data import DataRoot, image_store
from competition.predict.probs import EPS, argmax

SIDE = 256
INSTALL = "pip install pydensecrf2 (needs a C++ compiler: apt-get install g++), or ./run.sh setup"


@dataclass(frozen=True)
class CrfParams:
    """pydensecrf's parameters: appearance kernel (sxy, srgb, compat), smoothness kernel (gauss_sxy,
    gauss_compat), mean-field iterations. Distances in pixels of the 256 x 256 grid, colours in 0-255."""

    sxy: float
    srgb: float
    compat: float
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    iterations: int = 5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"dense CRF sxy {self.sxy:g} srgb {self.srgb:g} compat {self.compat:g} x{self.iterations}"


# the candidates fitted out of fold: the paper's PASCAL setting scaled to a 256 grid (sxy 80 -> 40), a weaker
# one, and two wider and more colour-tolerant ones (a first grid's local candidate, sxy 20 srgb 8 compat 3, was
# the worst out of fold on trashcan-mini and the sample, and sxy 60 srgb 25 the best: benchmarks/RESULTS.md)
GRID = (
    CrfParams(40, 13, 10),
    CrfParams(40, 13, 4),
    CrfParams(60, 25, 6),
    CrfParams(80, 40, 8),
)


def parse_params(data: Any) -> CrfParams | None:
    """A CrfParams from its dict (postprocess.json), or None when it is not one."""
    if not isinstance(data, dict) or set(data) != set(CrfParams.__dataclass_fields__):
        return None
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in data.values())
    if not numbers or min(data.values()) <= 0 or data["iterations"] != int(data["iterations"]):
        return None
    return CrfParams(**{k: (int(v) if k == "iterations" else float(v)) for k, v in data.items()})


def available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def require() -> None:
    if not available():
        raise UserError(f"the dense CRF needs pydensecrf2, which is not installed: {INSTALL}")


def refine_one(scores: np.ndarray, image: np.ndarray, params: CrfParams) -> np.ndarray:
    """Mean-field marginals Q [C, H, W] (float32) of calibrated scores [C, H, W] and the image [H, W, 3]."""
    import pydensecrf.densecrf as dcrf

    c, h, w = scores.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(-scores.reshape(c, -1), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    crf.addPairwiseBilateral(
        sxy=params.sxy, srgb=params.srgb, rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=params.compat
    )
    return np.asarray(crf.inference(params.iterations), np.float32).reshape(c, h, w)


def _refine_block(scores: np.ndarray, images: np.ndarray, params: CrfParams) -> np.ndarray:
    return np.stack([refine_one(s, im, params) for s, im in zip(scores, images, strict=True)])


def _confusions(
    scores: np.ndarray, images: np.ndarray, truth: np.ndarray, grid: Sequence[CrfParams], ignore: int
) -> np.ndarray:
    """Per image and candidate, the confusion [B, G, C, C] of the CRF's decision against the truth [B, H, W]."""
    b, c = scores.shape[:2]
    out = np.zeros((b, len(grid), c, c), np.int64)
    for i in range(b):
        keep = truth[i] != ignore
        t = truth[i][keep].astype(np.int64)
        for g, params in enumerate(grid):
            pred = argmax(np.log(refine_one(scores[i], images[i], params) + np.float32(EPS)), 0)[keep]  # as decided
            out[i, g] = np.bincount(t * c + pred, minlength=c * c).reshape(c, c)
    return out


def default_jobs() -> int:
    return min(8, usable_cores())


_ACTIVE: list[tuple[ProcessPoolExecutor, int]] = []  # the pool (and its size) of the innermost `processes()`


@contextmanager
def processes(jobs: int | None = None) -> Iterator[None]:
    """CRF work inside runs in `jobs` spawned processes (default: every core, at most 8), started on first use
    and ended with the block, so none outlives the command; outside any such block, CRF work runs in this
    process."""
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1 or _ACTIVE:
        yield
        return
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    _ACTIVE.append((pool, jobs))
    try:
        yield
    finally:
        _ACTIVE.pop()
        pool.shutdown(cancel_futures=True)


def _split(n: int, jobs: int) -> list[slice]:
    step = -(-n // jobs)
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def _map(fn: Callable, n: int, jobs: int | None, *arrays: np.ndarray, extra: tuple = ()) -> list[Any]:
    """fn over `jobs` parts of the arrays: in the active pool (or, with `jobs` > 1 given, a pool of its own)."""
    if jobs is not None and jobs > 1 and not _ACTIVE and n > 1:
        with processes(jobs):
            return _map(fn, n, jobs, *arrays, extra=extra)
    if not _ACTIVE or n <= 1 or jobs == 1:
        return [fn(*arrays, *extra)]
    pool, size = _ACTIVE[-1]
    parts = _split(n, min(size, n))
    columns = [[a[p] for p in parts] for a in arrays] + [[e] * len(parts) for e in extra]
    return list(pool.map(fn, *columns))


def refine(scores: np.ndarray, images: np.ndarray, params: CrfParams, jobs: int | None = None) -> np.ndarray:
    """Q [B, C, H, W] of a block of calibrated scores [B, C, H, W] and images [B, H, W, 3] (in the processes of
    the active `processes()` block; `jobs`: 1 = here, N = a pool of N for this call)."""
    require()
    return np.concatenate(_map(_refine_block, len(scores), jobs, scores, images, extra=(params,)))


def confusions(
    scores: np.ndarray,
    images: np.ndarray,
    truth: np.ndarray,
    grid: Sequence[CrfParams],
    ignore: int,
    jobs: int | None = None,
) -> np.ndarray:
    """Confusions [B, G, C, C] of every candidate's decision on a block (for fitting: only counts travel)."""
    require()
    return np.concatenate(_map(_confusions, len(scores), jobs, scores, images, truth, extra=(tuple(grid), ignore)))


def grid_images(root: DataRoot, split: str) -> Callable[[Sequence[str]], np.ndarray]:
    """`pixels(file_names) -> [B, 256, 256, 3] uint8`: the split's images at the submission grid (decoded once,
    cached as the training images are)."""
    coco = root.coco(split)
    store = image_store(root.root, coco.path, coco.images, (SIDE, SIDE))
    by_name = {im.file_name: im.id for im in coco.images}

    def pixels(names: Sequence[str]) -> np.ndarray:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise UserError(f"{Path(coco.path)}: no image {missing[0]!r} (probabilities stored for another set?)")
        return np.stack([store[by_name[n]] for n in names])

    return pixels
