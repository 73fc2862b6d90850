"""The class table: pixel values of categories, and the keep / ignore / merge policy per category.

Pixel value of a category = 1 + its index among the *kept* categories sorted by id; background is 0.
With every category kept this reproduces both competition runs (run A: UNKNOWN -> 1, General trash -> 2 ...).
An ignored category's pixels become `ignore_index` (skipped by loss and metric); a merged category's pixels
take the value of its target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from competition.core.errors import UserError
from competition.core.names import did_you_mean


@dataclass(frozen=True)
class ClassTable:
    """Names by pixel value, and each category id's pixel value (or ignore_index) and painting rank."""

    names: tuple[str, ...]  # names[0] == "background"
    value_of: dict[int, int]  # category id -> pixel value written in the mask
    rank_of: dict[int, int]  # category id -> 1 + index of the category sorted by id (overlap priority)
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "value_of": self.value_of, "ignore_index": self.ignore_index}


MAX_CATEGORIES = 254  # class values 1..254 in uint8 masks and submissions; 0 is background, 255 ignored


def build_class_table(
    categories: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    policy: dict[str, str] | None = None,
    ignore_index: int = 255,
) -> ClassTable:
    """Apply `policy` (category name or id -> keep | ignore | merge:<name or id>) to categories sorted by id."""
    cats = sorted(categories, key=lambda c: c["id"])
    limit = min(MAX_CATEGORIES, ignore_index - 1) if 0 < ignore_index <= 255 else MAX_CATEGORIES
    if len(cats) > limit:  # class values 1..N must not reach the ignore value, and fit uint8 masks and CSVs
        raise UserError(
            f"the dataset has {len(cats)} categories; at most {limit} fit uint8 masks beside background and the "
            f"ignore value {ignore_index}"
        )
    lookup = _lookup(cats)
    actions: dict[int, str] = {c["id"]: "keep" for c in cats}
    targets: dict[int, int] = {}
    for key, action in (policy or {}).items():
        cid = _find(lookup, key, "classes")
        action = str(action).strip()
        if action in ("keep", "ignore"):
            actions[cid] = action
        elif action.startswith("merge:"):
            actions[cid] = "merge"
            targets[cid] = _find(lookup, action[len("merge:") :], f"classes.{key}")
        else:
            raise UserError(f"setting classes.{key}={action!r}: expected keep, ignore or merge:<category>")
    kept = [c for c in cats if actions[c["id"]] == "keep"]
    value_of = {c["id"]: 1 + i for i, c in enumerate(kept)}
    for c in cats:
        if actions[c["id"]] == "ignore":
            value_of[c["id"]] = ignore_index
    for cid, target in targets.items():
        if actions[target] != "keep":
            raise UserError(f"setting classes: cannot merge category {cid} into {target}, which is not kept")
        value_of[cid] = value_of[target]
    rank_of = {c["id"]: 1 + i for i, c in enumerate(cats)}
    names = ("background", *(c["name"] for c in kept))
    return ClassTable(names, value_of, rank_of, ignore_index)


def _lookup(cats: list[dict[str, Any]]) -> dict[str, int]:
    table = {str(c["id"]): c["id"] for c in cats}
    table.update({c["name"]: c["id"] for c in cats})
    return table


def _find(lookup: dict[str, int], key: str, setting: str) -> int:
    key = str(key).strip()
    if key in lookup:
        return lookup[key]
    raise UserError(f"setting {setting}: unknown category {key!r}{did_you_mean(key, lookup)}")
