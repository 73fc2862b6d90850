"""The one grammar of test-time augmentation, used by the settings check (`val_tta`), validation and `predict` /
`ensemble --tta`: `none`, or comma-separated views: `hflip`, `vflip`, `d4` (the 8 rotations x flip of the square)
and scales in 0.1..4, e.g. `hflip,vflip,0.75,1,1.25` or `d4,1,1.5`. Each item at most once; d4 holds every flip,
so it takes no hflip/vflip; d4 needs square inputs (`check_square`).

A view is plain data here; predict.inference applies it to a batch and maps the prediction back.
"""

from __future__ import annotations

from dataclasses import dataclass

from competition.core.errors import UserError

FLIPS = {"hflip": 3, "vflip": 2}  # the tensor dimension each flip reverses ([B, C, H, W])
SCALES = (0.1, 4.0)


@dataclass(frozen=True)
class View:
    """One TTA view: resize by `scale`, rotate by `rot` x 90 degrees, then optionally flip (dims 3 =
    horizontal, 2 = vertical). The prediction is mapped back by the inverse steps in reverse order."""

    scale: float = 1.0
    flip: int | None = None
    rot: int = 0


D4 = [(rot, flip) for rot in range(4) for flip in (None, 3)]  # the 8 symmetries of the square


def parse_tta(spec: str | None, source: str = "--tta") -> list[View]:
    """`"hflip,vflip,0.75,1,1.25"` -> every scale with no flip and with each flip (3 x 3 = 9 views);
    `"d4"` (or `"d4,0.75,1,1.25"`) -> the 8 rotations x flip at every scale. UserError naming `source` else."""
    if spec is None or str(spec).strip() in ("", "none"):
        return [View()]
    if not isinstance(spec, str):
        raise UserError(f"{source} {spec!r}: expected none or views such as hflip, vflip, d4 and scales")
    items = [s.strip() for s in spec.split(",")]
    flips: list[int | None] = [None]
    scales: list[float] = []
    d4 = False
    for item in items:
        if items.count(item) > 1:
            raise UserError(f"{source} {spec!r}: {item!r} is given twice")
        if item == "d4":
            d4 = True
        elif item in FLIPS:
            flips.append(FLIPS[item])
        else:
            scales.append(_scale(item, spec, source))
    if len(set(scales)) < len(scales):
        raise UserError(f"{source} {spec!r}: a scale is given twice")
    if d4 and len(flips) > 1:
        raise UserError(f"{source} {spec!r}: d4 already holds every flip; drop hflip/vflip")
    if d4:
        return [View(s, f, r) for s in (scales or [1.0]) for r, f in D4]
    return [View(s, f) for s in (scales or [1.0]) for f in flips]


def _scale(item: str, spec: str, source: str) -> float:
    try:
        scale = float(item)
    except ValueError:
        raise UserError(f"{source} {spec!r}: {item!r} is neither hflip, vflip, d4 nor a scale") from None
    if not SCALES[0] <= scale <= SCALES[1]:
        raise UserError(f"{source} {spec!r}: scale {item} out of range {SCALES[0]:g}..{SCALES[1]:g}")
    return scale


def check_square(views: list[View], hw: tuple[int, int], source: str = "--tta") -> None:
    """d4's rotations need square inputs: UserError naming `source` and the size otherwise."""
    if any(v.rot for v in views) and hw[0] != hw[1]:
        raise UserError(f"{source}: TTA d4 rotates the image: it needs square inputs, got image size {hw[0]}x{hw[1]}")
