"""Exponential backoff as a pure policy: how long to wait after the n-th consecutive failure.

The policy only computes delays; whoever retries owns the counting and the sleeping (the work
queue counts failures per key, the watch loops count their own). There is deliberately no
"max retries": upstream abandoned a pod after 20 failures (its bug 8), whereas a capped delay
keeps retrying forever at a bounded rate, which is what a reconciler needs.

No jitter: the delays are deterministic so tests can assert them exactly. Spreading is not
needed here because every retry is per key, not a herd of clients hitting one server at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base * factor ** (failures - 1)``, never more than ``cap`` (all in seconds).

    With the defaults: 0.1, 0.2, 0.4, ... 51.2, then 60 for every further failure.
    """

    base: float = 0.1
    cap: float = 60.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        for field_name in ("base", "cap", "factor"):
            value = getattr(self, field_name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"Backoff.{field_name} must be a finite number, got {value!r}")
        if self.base <= 0:
            # A zero base would retry a failing key in a hot loop.
            raise ValueError(f"Backoff.base must be > 0, got {self.base!r}")
        if self.cap < self.base:
            raise ValueError(f"Backoff.cap ({self.cap!r}) must be >= base ({self.base!r})")
        if self.factor < 1:
            raise ValueError(f"Backoff.factor must be >= 1, got {self.factor!r}")

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures; 0.0 when nothing has failed yet.

        Exact for any count: a huge ``failures`` (a pod failing for weeks) gives ``cap`` without
        overflowing.
        """
        if failures < 0:
            raise ValueError(f"failures must be >= 0, got {failures!r}")
        if failures == 0:
            return 0.0
        try:
            raw = self.base * self.factor ** (failures - 1)
        except OverflowError:
            return self.cap
        return min(raw, self.cap)
