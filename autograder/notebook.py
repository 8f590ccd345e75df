"""Reading notebooks and finding their nbgrader cells by grade_id."""

from __future__ import annotations

from pathlib import Path

import nbformat


class NotebookError(ValueError):
    """A notebook cannot be used; the message says why in words a student understands."""


def read_notebook(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        raise NotebookError(f"{path} does not exist") from None
    except Exception as exc:  # nbformat raises several unrelated types for unreadable input
        raise NotebookError(f"{path} is not a readable Jupyter notebook ({exc.__class__.__name__}: {exc})") from None


def grade_id(cell) -> str | None:
    """The cell's nbgrader grade_id; None when it has none, however its metadata is (mis)shaped."""
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    meta = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    gid = meta.get("grade_id") if isinstance(meta, dict) else None
    return gid if isinstance(gid, str) else None


def grade_cells(nb) -> dict[str, nbformat.NotebookNode]:
    """grade_id -> cell, for every cell nbgrader tracks."""
    return {gid: cell for cell in nb.cells if (gid := grade_id(cell))}


SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def strip_markers(source: str) -> str:
    """The instructor's code with nbgrader's solution markers taken out: the answer key's form."""
    return "\n".join(line for line in source.split("\n") if line.strip() not in SOLUTION_MARKERS)


def module_source(nb, cell_ids) -> str:
    """The code of the given grade cells, in the given order, as one module's text."""
    cells = grade_cells(nb)
    missing = [cid for cid in cell_ids if cid not in cells]
    if missing:
        raise NotebookError(f"the notebook has no cell{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return "\n\n".join(strip_markers(cells[cid].source) for cid in cell_ids) + "\n"
