"""The loss setting's grammar: a weighted sum of named losses, such as "0.7*ce+0.3*dice"."""

from __future__ import annotations

import re

from competition.core.errors import UserError
from competition.core.names import NAMES

_LOSS_TERM = re.compile(r"^\s*(?:(\d*\.?\d+(?:e-?\d+)?)\s*\*\s*)?([a-z]+)\s*$")


def parse_loss(spec: str) -> list[tuple[float, str]]:
    """`"0.7*ce+0.3*dice"` -> [(0.7, "ce"), (0.3, "dice")]; a bare name has weight 1."""
    terms = []
    for part in str(spec).split("+"):
        m = _LOSS_TERM.match(part)
        if not m or m.group(2) not in NAMES["loss"]:
            names = ", ".join(NAMES["loss"])
            raise UserError(f"setting loss={spec!r}: expected terms like 'ce', '0.5*dice' joined by '+' ({names})")
        terms.append((float(m.group(1) or 1.0), m.group(2)))
    return terms
