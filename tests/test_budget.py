"""The judge's budget counts what the judge did, not how long it waited for a core (autograder/budget.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from autograder.budget import Budget, run_delay

SPIN = "import os\nos.sched_setaffinity(0, {%d})\nwhile True:\n    pass\n"


@pytest.mark.slow
def test_a_starved_judge_is_charged_for_its_work_not_its_wait():
    # The judge runs at nice +19 (checks.py); here a busy process at nice 0 shares
    # its one core, so the judge gets about 1/70 of it.
    core = min(os.sched_getaffinity(0))
    result = {}

    def judge():
        os.sched_setaffinity(0, {core})  # this thread only
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        budget = Budget(60.0)
        budget.start()
        started, cpu = time.monotonic(), time.thread_time()
        while time.thread_time() - cpu < 0.1:
            pass
        result.update(wall=time.monotonic() - started, cpu=time.thread_time() - cpu, spent=budget.spent())
        time.sleep(0.5)  # blocked, not starved: counts in full
        result["after_sleep"] = budget.spent()

    busy = [subprocess.Popen([sys.executable, "-c", SPIN % core]) for _ in range(1)]
    try:
        time.sleep(0.5)  # every spinner on its core
        thread = threading.Thread(target=judge)
        thread.start()
        thread.join(120)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert result["wall"] > 3 * result["cpu"], result  # it really waited for its core
    assert 0.9 * result["cpu"] <= result["spent"] < result["cpu"] + 0.5 * (result["wall"] - result["cpu"]), result
    assert result["after_sleep"] >= result["spent"] + 0.5, result


def test_before_it_starts_nothing_is_spent_and_a_spent_budget_is_over():
    budget = Budget(0.0)
    assert budget.spent() == 0.0 and not budget.over()
    budget.start()
    time.sleep(0.01)
    assert budget.over() and not budget.over(grace=60.0)
    assert run_delay(threading.get_native_id()) is not None  # the kernel keeps the figure here
