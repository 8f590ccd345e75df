"""The judge's time on one submission, counted as it would pass on an idle machine.

The hidden checks run at nice +19 so that they never slow the sandboxes down (checks.py). While sandboxes
train, the judging thread may wait many times longer for a core than it computes: on two cores with two
sandboxes training, a replay of about 5 s of arithmetic took 56 s of wall time. A wall-clock limit would
then give an honest submission a "limit" row only because the machine was busy. The CI machine did exactly
that with a 20 s limit.

So the budget counts the judging thread's wall time less the time it was runnable but waiting for a core.
The kernel keeps that figure as the run delay in /proc/self/task/<tid>/schedstat. Time that a check spends
blocked (sleeping, or waiting on a lock or on a pipe) still counts, so a check that hangs is stopped all the
same. Where the kernel keeps no schedstat, wall time is all that is left, and the budget counts that.
"""

from __future__ import annotations

import math
import threading
import time


class Budget:
    """``budget.start()`` in the thread that judges; then ``budget.spent()`` or ``budget.over()`` from any
    thread."""

    def __init__(self, seconds: float = math.inf):
        self.seconds = seconds
        self._tid: int | None = None
        self._first = self._last = 0.0  # the thread's run delay at start, and the latest one read
        self._started: float | None = None

    def start(self) -> None:
        self._tid = threading.get_native_id()
        self._first = self._last = run_delay(self._tid) or 0.0
        self._started = time.monotonic()  # last: spent() reads 0 until every field above is set

    def spent(self) -> float:
        """Seconds since start() that the judging thread computed or was blocked; 0 before start()."""
        started = self._started
        if started is None:
            return 0.0
        delay = run_delay(self._tid)
        if delay is not None:  # None once the thread has ended: its last figure stands
            self._last = max(self._last, delay)
        return max(0.0, time.monotonic() - started - (self._last - self._first))

    def over(self, grace: float = 0.0) -> bool:
        return self.spent() > self.seconds + grace


def run_delay(tid: int | None) -> float | None:
    """Seconds thread `tid` of this process has spent runnable, waiting for a core; None where unknown."""
    if tid is None:
        return None
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None
