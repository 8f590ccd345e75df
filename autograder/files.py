"""Writing a file so that a reader, or a crash, never sees half of it: results, reports, the release."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: Path, text: str, *, encoding: str = "utf-8") -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("w", encoding=encoding, newline="") as f:  # newline="": the text's own line endings
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left behind when writing failed
