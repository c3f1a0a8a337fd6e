"""Training time: `train.max_minutes` stops a run once that much training time (data loading included,
validation excluded) has accumulated; `train.val_every_minutes` validates at the first epoch end past each
multiple of it. The total continues from the history on resume and is recorded in metrics.jsonl as
`train_minutes`. In a distributed run every decision is rank 0's (broadcast by the loop), so all ranks stop
and validate together."""
from __future__ import annotations

import time
from collections.abc import Callable


class TrainingClock:
    """Training time accumulated over steps (data loading included, validation excluded) for
    `train.max_minutes` and `train.val_every_minutes`; continues from the history on resume."""

    def __init__(self, t_cfg, history: list[dict], *, val_key: str):
        self.max_minutes, self.val_every = t_cfg.max_minutes, t_cfg.val_every_minutes
        self.val_interval = t_cfg.val_interval
        self.seconds = 60.0 * history[-1].get("train_minutes", 0.0) if history else 0.0
        self.last_val_minutes = max((h.get("train_minutes", 0.0) for h in history if val_key in h), default=0.0)
        self._mark = time.perf_counter()

    @property
    def minutes(self) -> float:
        return round(self.seconds / 60.0, 5)

    @property
    def spent(self) -> bool:
        return self.max_minutes is not None and self.seconds >= 60.0 * self.max_minutes

    def start(self) -> None:
        self._mark = time.perf_counter()

    def tick(self) -> bool:
        """Add the time since the last mark; True when the budget is spent."""
        now = time.perf_counter()
        self.seconds, self._mark = self.seconds + now - self._mark, now
        return self.spent

    def out_of_time(self, log: Callable[[str], None]) -> bool:
        """True (and says so) when the budget is spent: checked before an epoch starts."""
        if self.spent:
            log(f"stopped after {self.seconds / 60:.2f} training minutes (train.max_minutes {self.max_minutes})")
        return self.spent

    def validation_due(self, epoch: int, *, last: bool) -> bool:
        """At the last epoch, when stopping for time, and every val_interval epochs (or, with
        val_every_minutes, at the first epoch end past each multiple of it); records the validation."""
        if self.val_every is not None:
            due = int(self.minutes // self.val_every) > int(self.last_val_minutes // self.val_every)
        else:
            due = (epoch + 1) % self.val_interval == 0
        if due or last or self.spent:
            self.last_val_minutes = self.minutes
            return True
        return False
