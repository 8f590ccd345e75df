#!/usr/bin/env python
"""Benchmark: how fast the grader drains a run's print() output while another thread of the grader computes
in Python (the judge), with the kernel's default 64 KB pipes and with the 1 MB pipes the sandbox asks for (sandbox/watchdog.py).

Each round of the reader needs the GIL; a thread spinning in Python hands it over once per switch interval
(5 ms), so the number of rounds (output / pipe size) sets the time. Prints both figures from one run:

    python bench/pipe_drain.py [--mb 300]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import selectors
import subprocess
import sys
import threading
import time


def drain(mb: int, pipe_bytes: int | None) -> float:
    writer = subprocess.Popen([sys.executable, "-c", f"import sys\nfor _ in range({mb}): sys.stdout.write('x' * 1_000_000)"],
                              stdout=subprocess.PIPE)
    if pipe_bytes:
        fcntl.fcntl(writer.stdout.fileno(), fcntl.F_SETPIPE_SZ, pipe_bytes)
    chunk = pipe_bytes or 1 << 16
    busy = threading.Event()

    def judge():  # pure Python, holding the GIL as much as it is allowed
        x = 0
        while not busy.is_set():
            x += 1

    spinner = threading.Thread(target=judge)
    spinner.start()
    sel = selectors.DefaultSelector()
    sel.register(writer.stdout, selectors.EVENT_READ)
    started, done = time.monotonic(), False
    while not done:
        for key, _ in sel.select(timeout=0.05):
            done = done or not os.read(key.fd, chunk)
    seconds = time.monotonic() - started
    busy.set()
    spinner.join()
    writer.wait()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="megabytes of output (default 300)")
    mb = parser.parse_args().mb
    print(f"draining {mb} MB of print() beside a thread computing in Python")
    print(f"  64 KB pipes (the kernel's default): {drain(mb, None):6.1f} s")
    print(f"   1 MB pipes (the sandbox's):       {drain(mb, 1 << 20):6.1f} s")


if __name__ == "__main__":
    main()
