"""What a caller (a search trial) hears during a run: every epoch and every finished fold; either may raise to
stop the run (pruning)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# on_epoch(fold, epoch, running CV mean, row) is called after every epoch, with the epoch's metrics.csv row
# (its scores NaN when the epoch was not validated: val_every).
# The running CV mean averages the finished folds' scores and the current fold's best so far.
EpochHook = Callable[[int, int, float, dict[str, Any]], None]
# on_fold(fold, result) is called once each fold is done (trained now, or finished earlier and skipped), in fold
# order, with its result (result.json: scores, `image_scores`): pruning on whole folds.
FoldHook = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class Hooks:
    on_epoch: EpochHook | None = None
    on_fold: FoldHook | None = None

    def recording(self, stopped: list[BaseException]) -> Hooks:
        """The same hooks, each appending what it raises to `stopped` (the run was stopped, not broken)."""

        def guard(hook: Callable[..., None] | None) -> Callable[..., None] | None:
            def guarded(*args: Any) -> None:
                try:
                    hook(*args)
                except BaseException as e:
                    stopped.append(e)
                    raise

            return guarded if hook else None

        return Hooks(guard(self.on_epoch), guard(self.on_fold))
