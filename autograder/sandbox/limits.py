"""The values a sandboxed run takes and gives: its limits, its mounts, its result, and the errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUN_NICE, WAIT_NICE = 10, 19  # a running sandbox; one that waits for its turn


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 300.0
    # Anonymous + shared memory of the whole run (mapped or not): the watchdog, and the kernel in a cgroup.
    memory_mb: int = 3072
    # Tasks (processes + threads) the command may have; one more is killed as a fork bomb.
    processes: int = 64
    # Bytes of stdout+stderr kept: half of it for each stream; the rest is discarded.
    output_bytes: int = 1_000_000
    # Size of each writable tmpfs: /scratch and /tmp.
    scratch_mb: int = 256


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    writable: bool = False


@dataclass
class RunResult:
    returncode: int | None  # None when killed by the watchdog (see killed_for)
    killed_for: str | None  # None, "time", "memory" or "processes"
    stdout: str
    stderr: str
    output_truncated: bool
    seconds: float
    peak_rss_mb: float  # peak of that memory over the whole run, as sampled (the cgroup's peak after its kill)
    sandboxed: bool
    data: bytes
    data_truncated: bool = False


class SandboxUnavailable(RuntimeError):
    """bubblewrap can not be used and the caller asked for a real sandbox."""


class TurnCancelled(Exception):
    """Raised by a `turn` callback: the waiting run is not wanted any more (the batch is stopping); the
    sandbox is killed before any of its command's own work starts."""
