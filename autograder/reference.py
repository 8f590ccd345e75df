"""The instructor's reference implementation, taken from the source notebook's solution cells.

One source of truth: the same cells the answer key runs are what the hidden checks compare students against.
This is trusted code (the course's own), so it is executed here, in the grading process.
"""

from __future__ import annotations

import types
from functools import lru_cache

from .config import Assignment, ConfigError
from .notebook import module_source, read_notebook


@lru_cache(maxsize=None)
def _load(path: str, cell_ids: tuple[str, ...]) -> types.ModuleType:
    module = types.ModuleType("reference")
    source = module_source(read_notebook(path), cell_ids)
    exec(compile(source, f"<reference {path}>", "exec"), module.__dict__)
    return module


def load(assignment: Assignment) -> types.ModuleType:
    module = _load(str(assignment.source_notebook), assignment.module_cells)
    if not isinstance(getattr(module, assignment.model, None), type):
        raise ConfigError(f"{assignment.folder / 'assignment.toml'}: model = {assignment.model!r}, but the answer key's "
                          f"cells ({', '.join(assignment.module_cells)}) define no class of that name")
    return module
