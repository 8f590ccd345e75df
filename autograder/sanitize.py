"""Read a submitted notebook and keep what the grader runs: every code cell, in the student's order.

The rules (README, "What the grader runs"):
- Every code cell of the notebook runs in notebook order, cells the student added included, as "Run all"
  would run them. Three kinds are not the student's to run: the test cells (never run: the hidden checks
  grade), the experiment cells named in the config (training on MNIST: the grader trains under its own
  budget) and the locked cells (the setup), which run as the course wrote them, where it put them: before
  the first of the student's cells that comes after them in the course, whether the student's copy moved,
  edited or deleted them.
- A cell is known by its nbgrader grade_id. When an editor dropped that metadata, it is known by what it
  is: a test or locked cell by its text, an answer cell by the names it defines (the course's answer cell
  that defines a function `f` is the student's cell that defines `f`), an experiment cell by sharing most of
  the names the course's experiment defines. The report says so.
- IPython's own input transformer translates magics (`%matplotlib`, `!pip`, `%%time`) into Python that the
  run's small `get_ipython()` (harness.Shell) performs or skips; skipped ones are noted.

The notebook is parsed as plain JSON with structural checks of our own: faster than full schema validation,
and it turns every malformation into one sentence a student understands.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

from .config import Assignment
from .notebook import grade_id, read_notebook, strip_markers
from .results import Message

class UnusableNotebook(ValueError):
    """Nothing of this notebook can be graded; carries the reason in both languages."""

    def __init__(self, message: Message):
        super().__init__(message.en)
        self.message = message


@dataclass(frozen=True)
class Cell:
    grade_id: str  # the nbgrader grade_id, or "cell N" for a cell the student added (N: its place in the notebook)
    source: str
    added: bool = False


@dataclass(frozen=True)
class Sanitized:
    cells: tuple[Cell, ...]  # what the run executes, in this order
    problems: tuple[Message, ...]  # notes for the report: what was matched, translated, replaced or skipped
    defined: frozenset[str] = field(default_factory=frozenset)  # top-level names the cells define (by reading them)


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



@dataclass(frozen=True)
class _CourseCell:
    gid: str
    role: str  # "locked", "test", "experiment" or "answer"
    position: int  # among the course notebook's code cells
    source: str  # without nbgrader's solution markers
    names: frozenset[str]


def sanitize(raw: bytes, assignment: Assignment) -> Sanitized:
    nb = parse(raw)
    course = _course_cells(assignment)
    by_gid = {c.gid: c for c in course}
    notes: list[Message] = []

    # Which course cell each of the student's code cells is (None: a cell the student added).
    code = [(number, cell) for number, cell in enumerate(nb["cells"], 1) if cell.get("cell_type") == "code"]
    sources = {number: _text(_source(cell), number, notes) for number, cell in code}
    known: dict[int, str] = {}
    for number, cell in code:
        gid = grade_id(cell)
        if gid in by_gid and gid not in known.values():
            known[number] = gid
        elif gid in by_gid and by_gid[gid].role == "answer":  # a copy (Jupyter copies metadata with a cell)
            notes.append(Message(f"解答セル {gid} が複数あります（{number} 番目のセルも）。どちらもノートブックの順に実行しました。",
                                 f"there is more than one answer cell {gid} (cell {number} too): both ran, in "
                                 "notebook order, as Run All would run them."))
    for cell in nb["cells"]:
        gid = grade_id(cell)
        if cell.get("cell_type") != "code" and gid in by_gid and by_gid[gid].role == "answer":
            notes.append(Message(f"解答セル {gid} が Markdown セルに変わっていたため、実行していません。",
                                 f"the answer cell {gid} had been turned into markdown, so it was not run."))
    matched = []
    for number, _ in code:
        if number not in known:
            gid = _recognise(sources[number], course, set(known.values()))
            if gid is not None:
                known[number] = gid
                matched += [f"cell {number} → {gid}"] if by_gid[gid].role == "answer" else []
    if matched:
        shown = ", ".join(matched)
        notes.append(Message(f"採点用のメタデータがないセルを、定義している名前から解答セルとみなしました: {shown}。",
                             f"cells that had lost their grading metadata were matched by the names they define: "
                             f"{shown}."))

    cells: list[tuple[int, Cell]] = []  # (course position it runs at, or -1 for a student's own cell)
    for number, _ in code:
        gid = known.get(number)
        role = by_gid[gid].role if gid else None
        if role in ("test", "experiment", "locked"):
            continue
        if gid:
            cells.append((by_gid[gid].position, Cell(gid, _translate(sources[number], gid, notes))))
        else:
            label = f"cell {number}"
            cells.append((-1, Cell(label, _translate(sources[number], label, notes), added=True)))
    # Locked cells are the course's: they run as it wrote them, where it put them (before the first of the
    # student's cells that follows them in the course), wherever the student's copy has them, or none.
    for locked in (c for c in course if c.role == "locked"):
        at = next((i for i, (pos, _) in enumerate(cells) if pos > locked.position), len(cells))
        cells.insert(at, (locked.position, Cell(locked.gid, locked.source)))

    ran = tuple(cell for _, cell in cells)
    return Sanitized(ran, tuple(notes), frozenset().union(*(_names(c.source) for c in ran)))


def _course_cells(assignment: Assignment) -> list[_CourseCell]:
    nb = read_notebook(assignment.source_notebook)
    out = []
    for position, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        meta = cell.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        if not gid:
            continue
        # A locked cell outside module_cells is a visible check without points (test_accuracy): a test cell.
        role = ("experiment" if gid in assignment.experiment_cells
                else "test" if meta.get("grade") or (not meta.get("solution") and gid not in assignment.module_cells)
                else "answer" if meta.get("solution") else "locked")
        source = strip_markers(cell.source)
        out.append(_CourseCell(gid, role, position, source, _names(source)))
    return out


def _recognise(source: str, course: list[_CourseCell], taken: set[str]) -> str | None:
    """The course cell a cell without metadata is, or None for a cell the student added."""
    text = _normal(source)
    for c in course:
        if c.role in ("locked", "test") and c.gid not in taken and text == _normal(c.source):
            return c.gid
    names = _names(source)
    for c in course:
        public = {n for n in c.names if not n.startswith("_")}
        if c.role == "answer" and c.gid not in taken and public and public <= names:
            return c.gid
    for c in course:
        if c.role == "experiment" and c.gid not in taken and c.names and 2 * len(c.names & names) >= len(c.names):
            return c.gid
    return None


def _normal(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.replace("\r\n", "\n").strip().split("\n"))


def _names(source: str) -> frozenset[str]:
    """The names a cell defines at its top level (def, class, assignment, import), read, never run."""
    try:
        tree = ast.parse(_MAGIC_LINE.sub("", source))
    except (SyntaxError, ValueError):
        return frozenset()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return frozenset(names)


def _text(source: str, number: int, notes: list[Message]) -> str:
    """The cell's text as Python can compile it: a lone surrogate (half of a character some editors leave
    behind) becomes U+FFFD, a NUL character is dropped."""
    try:
        source.encode("utf-8")
        clean = source
    except UnicodeEncodeError:
        clean = source.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    clean = clean.replace("\x00", "")
    if clean != source:
        notes.append(Message(f"{number} 番目のセルに文字として不正なデータがあったため、� に置き換えて実行しました。",
                             f"cell {number} contained bytes that are not valid text; they were replaced by � "
                             "before it ran."))
    return clean


# A line IPython would treat as a magic, a shell command or a help request; only such cells are translated.
_MAGIC_LINE = re.compile(r"^[ \t]*[%!].*$|^.*=[ \t]*[%!][^=].*$|^.*\?[ \t]*$", re.M)
_PERFORMED = {"time", "timeit", "matplotlib", "capture"}  # harness.Shell does these (or needs do nothing)


def _translate(source: str, where: str, notes: list[Message]) -> str:
    """Magics in IPython's own translation (harness.Shell runs it); other cells unchanged."""
    if not _MAGIC_LINE.search(source):
        return source
    from IPython.core.inputtransformer2 import TransformerManager  # 0.3 s, only for a cell that needs it

    try:
        code = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - IPython's parser gave up: the cell runs as written and errors as it would
        return source
    skipped = [f"!{m}" for m in re.findall(r"get_ipython\(\)\.(?:system|getoutput)\('([^']*)", code)]
    skipped += [f"%{m}" for m in re.findall(r"get_ipython\(\)\.run_line_magic\('(\w+)'", code) if m not in _PERFORMED]
    skipped += [f"%%{m}" for m in re.findall(r"get_ipython\(\)\.run_cell_magic\('(\w+)'", code)
                if m not in _PERFORMED]
    if skipped:
        shown = ", ".join(f"`{s[:40]}`" for s in skipped[:3]) + (f" (+{len(skipped) - 3})" if len(skipped) > 3 else "")
        notes.append(Message(f"{where} の {shown} は採点では実行しません（シェルコマンド・インストールなど）。",
                             f"{where}: {shown} skipped: shell commands, installs and other magics do not run "
                             "when grading."))
    return code
