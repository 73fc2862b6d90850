"""A dataset root in the competition layout, and which root a command uses.

```
DATA/  batch_*/...jpg  train_all.json  [train.json  val.json]  test.json  sample_submission.csv
```
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from competition.core.errors import UserError
from competition.data.classes import ClassTable, build_class_table
from competition.data.coco import CocoFile, check_image_files, load_coco
from competition.data.masks import MaskStore, cache_root, mask_store

SPLITS = ("train_all", "train", "val", "test")


@dataclass
class DataRoot:
    """The files of one dataset root; each JSON is read and validated once, on first use."""

    root: Path
    check_images: bool = True
    _files: dict[str, CocoFile] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: dataset root not found (expected a folder with train_all.json)")

    def has(self, split: str) -> bool:
        return os.path.lexists(self.root / f"{split}.json")  # a folder or FIFO of that name is an error, not absent

    def coco(self, split: str) -> CocoFile:
        """`train_all`, `train`, `val` or `test`, validated (image files too, when `check_images`)."""
        if split not in self._files:
            coco = load_coco(self.root / f"{split}.json", need_annotations=split != "test")
            if self.check_images:
                check_image_files(self.root, coco)
            self._files[split] = coco
        return self._files[split]

    @cached_property
    def categories(self) -> tuple[dict, ...]:
        """The competition's categories: those of train_all.json (else test.json)."""
        return self.coco("train_all" if self.has("train_all") else "test").categories

    def classes(self, policy: dict[str, str] | None = None, ignore_index: int = 255) -> ClassTable:
        return build_class_table(self.categories, policy, ignore_index)

    def masks(self, split: str, classes: ClassTable, overlap: str = "max", log=None) -> MaskStore:
        return mask_store(self.coco(split), classes, overlap, log=log)


def sample_root() -> Path:
    """Where the embedded synthetic sample dataset lives once generated: one folder per generator version, so
    a sample cached by an older generator is never reused."""
    from competition.data.sample import SAMPLE_VERSION

    return cache_root() / f"sample-data-v{SAMPLE_VERSION}"


def resolve_data_root(arg: str | Path | None, log: Callable[[str], None] = print) -> Path:
    """--data, else $COMPETITION_DATA, else ./data, else the sample dataset (generated once); says which."""
    if arg:
        path, why = Path(arg), "--data"
    elif os.environ.get("COMPETITION_DATA"):
        path, why = Path(os.environ["COMPETITION_DATA"]), "$COMPETITION_DATA"
    elif Path("data").is_dir():
        path, why = Path("data"), "./data"
    else:
        path, why = sample_root(), "no --data, $COMPETITION_DATA or ./data: embedded synthetic sample"
        if not (path / "train_all.json").exists():
            from competition.data.sample import write_sample_dataset

            log(f"data: generating the synthetic sample dataset at {path}")
            write_sample_dataset(path)
    log(f"data: {path} ({why})")
    return path


def is_sample(root: Path) -> bool:
    """True for the embedded sample dataset (commands pick a quick profile for it)."""
    return Path(root).resolve() == sample_root().resolve()
