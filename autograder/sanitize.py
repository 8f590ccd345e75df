"""Read a submitted notebook and keep only what the grader runs, as nbgrader's autograde would.

Locked cells (the setup imports) always come from the course's source notebook, so a student's edits to
them do not count; the graded solution cells come from the student, found by their nbgrader grade_id.
Test cells and free cells (training, experiments) are never run. The notebook is parsed as plain JSON with
structural checks of our own: faster than full schema validation, and it turns every malformation into one
sentence a student understands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .config import Assignment
from .notebook import grade_cells, read_notebook, strip_markers
from .results import Message


class UnusableNotebook(ValueError):
    """Nothing of this notebook can be graded; carries the reason in both languages."""

    def __init__(self, message: Message):
        super().__init__(message.en)
        self.message = message


@dataclass(frozen=True)
class Cell:
    grade_id: str
    source: str


@dataclass(frozen=True)
class Sanitized:
    cells: tuple[Cell, ...]  # in module order; a missing student cell is simply absent
    problems: tuple[Message, ...]  # notes on cells that were graded anyway (duplicates)
    missing: dict[str, Message]  # grade_id -> why that answer cell could not be taken


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return "".join(source)
    if isinstance(source, str):
        return source
    raise UnusableNotebook(Message("セルの source が壊れています。", "a cell's source is malformed."))


def parse(raw: bytes) -> dict:
    """The notebook's JSON, or UnusableNotebook with the reason."""
    if not raw.strip():
        raise UnusableNotebook(Message("ファイルが空です。ノートブックを保存してから提出し直してください。",
                                       "the file is empty: save the notebook and submit it again."))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnusableNotebook(Message("UTF-8 のテキストではありません。Jupyter で保存した .ipynb を提出してください。",
                                       "the file is not UTF-8 text: submit the .ipynb that Jupyter saved.")) from None
    try:
        nb = json.loads(text)
    except ValueError as exc:
        raise UnusableNotebook(Message(
            f"JSON として読めません（{exc.lineno} 行目）。ファイルが壊れているか途中で切れています。",
            f"not valid JSON (line {exc.lineno}): the file is damaged or cut short.")) from None
    if isinstance(nb, dict) and "nbformat" in nb and nb.get("nbformat") != 4:
        raise UnusableNotebook(Message(
            f"ノートブックの形式が古すぎます（nbformat {nb.get('nbformat')}）。Jupyter で開いて保存し直してください。",
            f"unsupported notebook format (nbformat {nb.get('nbformat')}): open it in Jupyter and save it again."))
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise UnusableNotebook(Message("Jupyter ノートブックではありません（cells がありません）。",
                                       "not a Jupyter notebook (it has no cells)."))
    if not all(isinstance(c, dict) for c in nb["cells"]):
        raise UnusableNotebook(Message("セルの形式が壊れています。", "a cell is malformed."))
    return nb


def sanitize(raw: bytes, assignment: Assignment) -> Sanitized:
    nb = parse(raw)
    course = grade_cells(read_notebook(assignment.source_notebook))
    by_id: dict[str, list[dict]] = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader") if isinstance(cell.get("metadata"), dict) else None
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if isinstance(gid, str):
            by_id.setdefault(gid, []).append(cell)

    cells, problems, missing = [], [], {}
    for gid in assignment.module_cells:
        reference = course[gid]
        if not reference.metadata["nbgrader"].get("solution"):
            # A locked cell: the course's version, whatever the student's copy says.
            cells.append(Cell(gid, strip_markers(reference.source)))
            continue
        found = [c for c in by_id.get(gid, []) if c.get("cell_type") == "code"]
        if not found:
            if by_id.get(gid):
                missing[gid] = Message(f"解答セル {gid} がコードセルではありません（Markdown に変わっています）。",
                                       f"the answer cell {gid} is no longer a code cell (it was turned into markdown).")
            else:
                missing[gid] = Message(f"解答セル {gid} が見つかりません（削除されたか、メタデータが変わっています）。",
                                       f"the answer cell {gid} is missing (deleted, or its metadata was changed).")
            continue
        if len(found) > 1:
            problems.append(Message(f"解答セル {gid} が {len(found)} 個あります。最初のものを採点します。",
                                    f"there are {len(found)} answer cells {gid}; the first one is graded."))
        cells.append(Cell(gid, _source(found[0])))
    return Sanitized(tuple(cells), tuple(problems), missing)
