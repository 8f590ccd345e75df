"""nbgrader's own flow after a batch: in an nbgrader course, write what `nbgrader autograde` would have written, so
the TA's usual `nbgrader generate_feedback`, `release_feedback`, `export` and formgrader work on the kit's grades.

    <root>/submitted/<student>/<lab>/<nb>.ipynb, timestamp.txt, submission_secret.txt   (nbgrader collect)
    <root>/autograded/<student>/<lab>/<nb>.ipynb, timestamp.txt, submission_secret.txt  (write_autograded)
    <root>/feedback/<student>/<lab>/<nb>.html, timestamp.txt, submission_secret.txt     (write_feedback, or
                                                                                          nbgrader generate_feedback)

(the folder names and the `{nbgrader_step}/{student_id}/{assignment_id}` layout are the course's
nbgrader_config.py's, when it says otherwise). The scores go to the course's gradebook through gradebook.record.

The autograded notebook is the student's submitted notebook as nbgrader's autograde sanitises it (outputs cleared,
locked and test cells restored from the release, nbgrader metadata from the release), never executed here: each
test cell `test_<part>` gets one output that shows the kit's result for that part (points, each check, the lost
checks' messages), so nbgrader's feedback page and formgrader carry the kit's explanation.

Which feedback page a student gets: write_feedback puts the kit's own page (report.feedback_html) where nbgrader
generate_feedback would put its rendering. `nbgrader generate_feedback <lab>` then keeps the kit's page (it skips
a student whose feedback is as new as the autograded notebook); `nbgrader generate_feedback --force <lab>` (or a
resubmission, whose timestamp is newer) replaces it with nbgrader's rendering of the autograded notebook: the
notebook, the scores from the gradebook, the late penalty, and the kit's result under each test cell. Without
write_feedback, generate_feedback renders nbgrader's page for everyone. release_feedback ships whichever is there.

Everything a student handed in is untrusted: the notebook is parsed, rebuilt cell by cell from its sources alone
(no outputs, attachments or metadata of the student's survive) and validated before nbformat writes it;
timestamp.txt and submission_secret.txt are copied only when they are short text that nbgrader can read.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from .files import write_atomic
from .results import INVALID, Message, SubmissionResult

if TYPE_CHECKING:
    import nbformat

    from .config import Assignment
    from .submissions import Submission

log = logging.getLogger(__name__)

CONFIG_NAME = "nbgrader_config.py"
TIMESTAMP = "timestamp.txt"
SECRET = "submission_secret.txt"  # release_feedback names the released page after it
_MAX_SMALL_FILE = 1024  # timestamp.txt and submission_secret.txt are one short line
_CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # nbformat 4.5's cell id


class NbgraderCourseError(ValueError):
    """The nbgrader course cannot be used as it is; the message says what to fix."""


@dataclass(frozen=True)
class NbgraderCourse:
    """An nbgrader course folder, with the names its nbgrader_config.py gives (CourseDirectory's defaults else)."""

    root: Path
    db_url: str
    course_id: str = ""
    directory_structure: str = os.path.join("{nbgrader_step}", "{student_id}", "{assignment_id}")
    source: str = "source"
    release: str = "release"
    submitted: str = "submitted"
    autograded: str = "autograded"
    feedback: str = "feedback"
    config_file: Path | None = None  # the nbgrader_config.py read, if any

    def folder(self, step: str, student_id: str, assignment: str) -> Path:
        """nbgrader's CourseDirectory.format_path: <root>/<directory_structure>."""
        return self.root / self.directory_structure.format(nbgrader_step=step, student_id=student_id,
                                                           assignment_id=assignment)

    def release_notebook(self, assignment: Assignment) -> Path:
        """The released student notebook of a lab: release/<lab>/<notebook> (nbgrader generate_assignment's)."""
        return self.folder(self.release, ".", assignment.name) / assignment.notebook


# --------------------------------------------------------------------------------------------------------------
# Finding the course

# CourseDirectory's traits this module uses, with nbgrader's defaults (nbgrader/coursedir.py).
_NAMES = {"source_directory": "source", "release_directory": "release", "submitted_directory": "submitted",
          "autograded_directory": "autograded", "feedback_directory": "feedback"}


def find(path: str | os.PathLike[str]) -> NbgraderCourse | None:
    """The nbgrader course that `path` is, or whose submitted/ folder it is; None when it is neither.

    A course is a folder with an nbgrader_config.py or a submitted/ folder. The config, when there, is read as
    nbgrader reads it (it is the instructor's trusted Python file, run by traitlets' loader): CourseDirectory.root,
    the step folders' names, directory_structure, course_id and db_url (default sqlite:///<root>/gradebook.db, as
    nbgrader's). Like `nbgrader` run from the course folder, a relative root is taken from that folder. Only the
    course's own file is read, not the user's or the system's Jupyter config folders."""
    path = Path(path).absolute()
    if not path.is_dir():
        return None  # a zip or a missing path: no course to write into
    if (path / CONFIG_NAME).is_file():
        return _course(path)
    if (path.parent / CONFIG_NAME).is_file():
        course = _course(path.parent)
        if _same(path, course.folder(course.submitted, ".", ".")):
            return course
    if (path / "submitted").is_dir():
        return _course(path)
    if path.name == "submitted":
        return _course(path.parent)
    return None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _course(folder: Path) -> NbgraderCourse:
    """The course at `folder`, with its nbgrader_config.py when it has one."""
    values, config_file = {}, None
    if (folder / CONFIG_NAME).is_file():
        config_file = folder / CONFIG_NAME
        values = _read_config(config_file)
    root = Path(values.get("root") or folder)
    if not root.is_absolute():
        root = folder / root
    root = Path(os.path.abspath(root))
    db_url = values.get("db_url") or f"sqlite:///{os.path.abspath(root / 'gradebook.db')}"
    names = {key.removesuffix("_directory"): values.get(key) or default for key, default in _NAMES.items()}
    structure = values.get("directory_structure") or NbgraderCourse.directory_structure
    missing = [k for k in ("nbgrader_step", "student_id", "assignment_id") if "{" + k + "}" not in structure]
    if missing:
        raise NbgraderCourseError(f"{config_file}: CourseDirectory.directory_structure {structure!r} lacks "
                                  f"{', '.join('{' + k + '}' for k in missing)}; nbgrader needs all three")
    return NbgraderCourse(root=root, db_url=db_url, course_id=(values.get("course_id") or "").strip(),
                          directory_structure=structure, config_file=config_file, **names)


def _read_config(config_file: Path) -> dict[str, str]:
    """CourseDirectory's values from an nbgrader_config.py, with traitlets' own loader (what nbgrader runs)."""
    from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

    try:
        config = PyFileConfigLoader(config_file.name, path=str(config_file.parent), log=log).load_config()
    except ConfigFileNotFound:  # pragma: no cover - checked just before
        return {}
    except Exception as exc:  # the file is Python: anything it raises means nbgrader cannot read it either
        raise NbgraderCourseError(f"{config_file} cannot be read ({exc.__class__.__name__}: {exc}); "
                                  f"check it with `nbgrader --help-all` run in {config_file.parent}") from None
    section = config.get("CourseDirectory", {})
    wanted = ("root", "db_url", "course_id", "directory_structure", *_NAMES)
    wrong = [k for k in wanted if k in section and not isinstance(section[k], str)]
    if wrong:
        raise NbgraderCourseError(f"{config_file}: CourseDirectory.{', '.join(wrong)} must be text (nbgrader reads "
                                  "them as strings)")
    return {k: section[k] for k in wanted if k in section}


# --------------------------------------------------------------------------------------------------------------
# autograded/


@dataclass(frozen=True)
class Written:
    """What was written for one student: the notebook or page (None when skipped) and, when something was left
    out or skipped, why, in English for the TA."""

    student_id: str
    path: Path | None
    note: str | None = None


def write_autograded(course: NbgraderCourse, assignment: Assignment, results: list[SubmissionResult],
                     submissions: Iterable[Submission], *, lang: str = "ja",
                     release: str | os.PathLike[str] | None = None) -> list[Written]:
    """autograded/<student>/<lab>/<notebook>.ipynb for every result, with timestamp.txt and submission_secret.txt
    copied from submitted/ when they are there (as nbgrader's autograde copies them).

    `submissions` are the batch's (their notebook bytes, already read within the batch's limits); `release` is the
    released student notebook (default: the course's release/<lab>/<notebook>); `lang` is the language of the
    kit's result under each test cell. A notebook that cannot be read still gets one: the released notebook with
    a note at the top and the kit's result under each test cell, so that the student's feedback page says why."""
    from .notebook import read_notebook

    release_path = Path(release) if release is not None else course.release_notebook(assignment)
    if not release_path.is_file():
        raise NbgraderCourseError(f"the released notebook {release_path} does not exist: run `autograder release` "
                                  "(or nbgrader generate_assignment), or pass the released notebook's path")
    released = read_notebook(release_path)
    by_id = {s.student_id: s for s in submissions}
    written = []
    for result, folder in _student_folders(course, course.autograded, results, assignment, written):
        submission = by_id.get(result.student_id)
        nb, note = autograded_notebook(released, submission.notebook if submission else None, result, assignment,
                                       lang=lang)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / assignment.notebook
        write_atomic(path, _writes(nb))
        submitted = course.folder(course.submitted, result.student_id, assignment.name)
        notes = [note] if note else []
        notes += _copy_small_files(submitted, folder, result)
        written.append(Written(result.student_id, path, "; ".join(notes) or None))
    return written


def _student_folder(course: NbgraderCourse, step: str, student_id: str, assignment: str) -> tuple[Path | None, str]:
    """<root>/<step>/<student>/<lab>, or None and why when the id cannot name a folder inside the course."""
    from .submissions import validate_student_id

    problem = validate_student_id(student_id)
    if problem is None and student_id != unicodedata.normalize("NFC", student_id):
        problem = "not in Unicode NFC form"
    if problem is not None:
        return None, f"not written: the student id cannot be a folder name ({problem})"
    folder = course.folder(step, student_id, assignment)
    try:
        inside = folder.resolve().is_relative_to(course.root.resolve())
    except OSError as exc:
        return None, f"not written: {folder} cannot be reached ({exc})"
    if not inside:  # a link in the course leading elsewhere: nothing is written through it
        return None, f"not written: {folder} leads outside the course folder {course.root}"
    return folder, ""


def _writes(nb) -> str:
    import nbformat

    nbformat.validate(nb)  # what we built must be a valid notebook before nbgrader reads it
    return nbformat.writes(nb) + "\n"


def _copy_small_files(source: Path, dest: Path, result: SubmissionResult) -> list[str]:
    """timestamp.txt and submission_secret.txt from `source` to `dest`, each only when it is a short, regular text
    file that nbgrader reads (a timestamp it cannot parse would stop generate_feedback for the whole class).
    Without a usable timestamp.txt, the result's time (from the LMS or timestamp.txt as the batch read it) is
    written in nbgrader's format; without any, none is. Returns notes for the TA."""
    notes = []
    timestamp = _small_text(source / TIMESTAMP)
    if timestamp is not None and _nbgrader_time(timestamp) is None:
        notes.append(f"{source / TIMESTAMP} is not a time nbgrader reads: not copied")
        timestamp = None
    if timestamp is None and result.submitted_at:
        from .late import submitted_at

        when = submitted_at(result)
        if when is not None:
            from datetime import timezone

            timestamp = when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    if timestamp is not None:
        write_atomic(dest / TIMESTAMP, timestamp)
    else:
        (dest / TIMESTAMP).unlink(missing_ok=True)
        notes.append("no submission time: nbgrader release_feedback needs timestamp.txt in the feedback folder")
    secret = _small_text(source / SECRET)
    if secret is not None and secret.strip() and secret.isprintable():
        write_atomic(dest / SECRET, secret)
    elif (source / SECRET).exists():
        notes.append(f"{source / SECRET} is not a short line of text: not copied")
    return notes


def _small_text(path: Path) -> str | None:
    """A regular file's text (not through a link), when it is short UTF-8; None otherwise."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_SMALL_FILE:
            return None
        return path.read_bytes()[:_MAX_SMALL_FILE].decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _nbgrader_time(text: str):
    """The time as nbgrader reads it (its own parse_utc: naive UTC), or None when nbgrader could not read it."""
    from nbgrader.utils import parse_utc  # slow import; record() has paid it in a batch

    text = text.strip()
    if not text or not text.isprintable():
        return None
    try:
        return parse_utc(text)
    except Exception:  # dateutil raises ValueError, OverflowError and others on text it cannot read
        return None


def autograded_notebook(released, submitted: bytes | None, result: SubmissionResult, assignment: Assignment, *,
                        lang: str = "ja") -> tuple[nbformat.NotebookNode, str | None]:
    """The autograded notebook of one student and, when the submission could not be read, why (for the TA).

    As nbgrader's autograde sanitises a submission: outputs are cleared, a grade_id seen twice keeps its last
    cell, every locked cell (the test cells among them) is the release's again, an answer cell keeps the student's
    source under the release's metadata, and a released cell the student deleted is put back after the cell it
    followed. The student's own cells stay, as plain cells. Only the parts' test cells stay nbgrader grade cells,
    and only the release's answer cells solution cells: the ones gradebook.record registers, which nbgrader's
    GetGrades looks up."""
    import nbformat
    from nbformat import v4

    from .notebook import grade_id

    cells, problem = _student_cells(submitted)
    release_cells = list(released.cells)
    tracked = {gid: cell for cell in release_cells if (gid := grade_id(cell))}

    # The last cell with a grade_id keeps it (nbgrader's DeduplicateIds); ids the release does not know are dropped.
    seen: set[str] = set()
    for cell in reversed(cells):
        if cell["grade_id"] in tracked and cell["grade_id"] not in seen:
            seen.add(cell["grade_id"])
        else:
            cell["grade_id"] = None

    # Released cells missing from the submission go back after the released cell before them.
    order = [c["grade_id"] for c in cells]
    for index, cell in enumerate(release_cells):
        gid = grade_id(cell)
        if gid is None or gid in order:
            continue
        before = next((grade_id(c) for c in reversed(release_cells[:index]) if grade_id(c) in order), None)
        at = order.index(before) + 1 if before is not None else 0
        order.insert(at, gid)
        cells.insert(at, {"cell_type": cell.cell_type, "source": None, "grade_id": gid, "id": None,
                          "missing": problem is None})

    answers = _answer_ids(released)
    out, used_ids = [], set()
    for cell in cells:
        gid = cell["grade_id"]
        rel = tracked.get(gid) if gid else None
        if rel is None:
            new = _students_cell(cell["cell_type"], cell["source"])
        else:
            meta = rel.metadata.get("nbgrader", {})
            locked = bool(meta.get("locked")) or (bool(meta.get("grade")) and not meta.get("solution"))
            if locked or cell["source"] is None:
                new = _new_cell(rel.cell_type, rel.source)
            else:
                new = _students_cell(rel.cell_type, cell["source"])
            if cell.get("missing") and not locked:
                new.source = _missing_notice(rel.cell_type, lang) + new.source
            new.metadata = {**new.metadata, **_nbgrader_metadata(rel, assignment, gid in answers)}
        cid = cell["id"] if cell["id"] and _CELL_ID.match(cell["id"]) else (rel.get("id") if rel else None)
        new.id = _unique_id(cid, used_ids)
        out.append(new)

    for cell in out:
        part = _part_of(cell, assignment)
        if part is not None:
            cell.outputs = [v4.new_output("stream", name="stdout", text=part_text(result, part, lang=lang))]
    if problem is not None:
        out.insert(0, _new_cell("markdown", _unreadable_notice(lang)))
        out[0].id = _unique_id("autograded-notice", used_ids)

    # The release's notebook metadata (its kernelspec, as nbgrader's OverwriteKernelspec): none of the student's.
    nb = v4.new_notebook(cells=out, metadata=copy.deepcopy(dict(released.metadata)))
    return nbformat.from_dict(nb), (f"the submitted notebook could not be read ({problem}): the released notebook "
                                    "was written with the kit's results") if problem else None


def _unique_id(wanted: str | None, used: set[str]) -> str:
    """`wanted` when it is free, else the first free "autograded-<n>": nbformat wants every cell id unique."""
    cid, n = wanted, len(used)
    while not cid or cid in used:
        cid, n = f"autograded-{n}", n + 1
    used.add(cid)
    return cid


def _student_cells(data: bytes | None) -> tuple[list[dict], str | None]:
    """The student's cells as plain data (type, source, grade_id, id), or [] and why the notebook is unreadable.

    Only what a sanitised notebook keeps is taken: outputs, attachments and metadata other than the grade_id
    are the student's to forge and are left behind."""
    if data is None:
        return [], "no notebook"
    import nbformat

    from .notebook import grade_id

    try:
        with warnings.catch_warnings():  # a student's duplicate cell ids and the like: nothing the TA must act on
            warnings.simplefilter("ignore")
            nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        raw = nb.get("cells")
        if not isinstance(raw, list):
            raise ValueError("it has no list of cells")
    except Exception as exc:  # nbformat raises many unrelated types on hostile input
        return [], f"{exc.__class__.__name__}: {str(exc)[:200]}"
    cells = []
    for cell in raw:
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        if not isinstance(source, str):
            source = ""
        cid = cell.get("id")
        cells.append({"cell_type": cell["cell_type"], "source": source, "grade_id": grade_id(cell),
                      "id": cid if isinstance(cid, str) else None})
    return cells, None


# A student's markdown is rendered by nbconvert without sanitising (nbgrader's feedback, formgrader, which runs in
# the TA's Jupyter server): raw HTML there could run script with the TA's session. No tag, comment or processing
# instruction can open without a "<" before a letter, "/", "!" or "?"; a link's javascript: scheme is the other way
# in. Formatting, maths ("x < 3") and text stay as the student wrote them.
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_SCRIPT_SCHEME = re.compile(r"(?i)\b(java|vb)script(\s*):")
STUDENT_RAW_MIMETYPE = "text/x-autograder-student-raw"


def _students_cell(cell_type: str, source: str):
    """A cell whose source is the student's, made safe to render: markdown without HTML tags or script links; a
    raw cell with a format no exporter includes (an untyped raw cell goes into nbconvert's HTML as it is)."""
    if cell_type == "markdown":
        source = _SCRIPT_SCHEME.sub(r"\1script-blocked\2:", _TAG_OPEN.sub("&lt;", source))
    cell = _new_cell(cell_type, source)
    if cell_type == "raw":
        cell.metadata["raw_mimetype"] = STUDENT_RAW_MIMETYPE
    return cell


def _new_cell(cell_type: str, source: str):
    from nbformat import v4

    make = {"code": v4.new_code_cell, "markdown": v4.new_markdown_cell, "raw": v4.new_raw_cell}[cell_type]
    cell = make(source=source)
    cell.pop("id", None)  # set by the caller, deterministically
    return cell


def _answer_ids(released) -> set[str]:
    from .notebook import grade_id

    return {gid for cell in released.cells if (gid := grade_id(cell))
            and cell.metadata.get("nbgrader", {}).get("solution") is True}


def _nbgrader_metadata(released_cell, assignment: Assignment, is_answer: bool) -> dict:
    """The release's metadata for a cell, with nbgrader's flags limited to what the gradebook knows: a grade cell
    only for a part's test cell (with the part's points), a solution cell only for a released answer cell, no
    task cells (gradebook.record makes none). A markdown answer that is no longer graded is a plain cell:
    nbgrader's metadata validator wants markdown answers graded."""
    meta = copy.deepcopy(dict(released_cell.metadata))
    nb = dict(meta.get("nbgrader", {}))
    part = _part_of_id(nb.get("grade_id"), assignment)
    if part is not None and nb.get("grade"):
        nb["points"] = float(assignment.points[part])
    else:
        nb["grade"] = False
        nb.pop("points", None)
    nb["solution"] = bool(is_answer and nb.get("solution")) and not (released_cell.cell_type == "markdown"
                                                                     and not nb["grade"])
    if nb.get("task"):
        nb["task"] = False
    meta["nbgrader"] = nb
    return meta


def _part_of_id(gid, assignment: Assignment) -> str | None:
    if isinstance(gid, str) and gid.startswith("test_") and gid[5:] in assignment.points:
        return gid[5:]
    return None


def _part_of(cell, assignment: Assignment) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return _part_of_id(meta.get("grade_id"), assignment) if meta.get("grade") else None


# --------------------------------------------------------------------------------------------------------------
# What a test cell shows

_WORDS = {
    "ja": {"head": "自動採点の結果", "points": "点", "no_checks": "このパートの確認は実行されませんでした。",
           "why": "理由", "observed": "（実行中の観測による）"},
    "en": {"head": "Autograder result", "points": "points", "no_checks": "No checks of this part were run.",
           "why": "Why", "observed": " (observed during your run)"},
}


def part_text(result: SubmissionResult, part: str, *, lang: str = "ja") -> str:
    """The kit's result for one part, as plain text for the part's test cell: the points, each check with its
    points, and the message of each check that lost points."""
    from .report import shown_parts

    w = _WORDS["ja" if lang == "ja" else "en"]
    earned, _, maxima, _ = shown_parts(result)
    got = 0.0 if result.status == INVALID else earned.get(part, 0.0)
    lines = [f"{w['head']}: {_num(got)} / {_num(maxima.get(part, 0.0))} {w['points']}"]
    if result.reason is not None:
        lines.append(f"{w['why']}: {_plain(result.reason.get(lang))}")
    checks = [c for c in result.checks if c.part == part]
    if not checks:
        lines.append(w["no_checks"])
    for c in checks:
        mark = "✓" if c.passed else "✗"
        title = _plain(c.title.get(lang)) + (w["observed"] if c.observed else "")
        lines.append(f"{mark} {title}: {_num(c.points)} / {_num(c.max_points)}")
        if c.message is not None and not c.passed:
            lines += [f"    {line}" for line in _plain(c.message.get(lang)).split("\n")]
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return f"{float(x) + 0.0:.2f}".rstrip("0").rstrip(".")


def _plain(text: str) -> str:
    """Text without control characters other than line breaks and tabs (no terminal escapes in an output)."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf") or c in "\u200c\u200d"
                   else ascii(c)[1:-1] for c in text)


def _missing_notice(cell_type: str, lang: str) -> str:
    text = Message("このセルは提出されたノートブックにありませんでした。配布版のセルを表示しています。",
                   "This cell was missing from the submission; the released cell is shown.").get(lang)
    return f"# {text}\n" if cell_type == "code" else f"*{text}*\n\n"


def _unreadable_notice(lang: str) -> str:
    """A markdown note above the released notebook. Fixed text only: the reason (which may quote the file) is shown
    in the test cells' outputs, which nbconvert escapes, never rendered as markdown."""
    text = Message("提出されたノートブックを読み込めませんでした。以下は配布版のノートブックと自動採点の結果です"
                   "（理由は各テストセルの下にあります）。",
                   "The submitted notebook could not be read. Below are the released notebook and the autograder's "
                   "results (the reason is under each test cell).").get(lang)
    return f"**{text}**"


# --------------------------------------------------------------------------------------------------------------
# feedback/


def _student_folders(course: NbgraderCourse, step: str, results: list[SubmissionResult], assignment: Assignment,
                     written: list[Written]):
    """(result, its folder under `step`) for each result that can have one; the others go into `written` with why."""
    for result in results:
        folder, why = _student_folder(course, step, result.student_id, assignment.name)
        if folder is None:
            written.append(Written(result.student_id, None, why))
        else:
            yield result, folder


def write_feedback(course: NbgraderCourse, assignment: Assignment, results: list[SubmissionResult], *,
                   lang: str = "ja", render: Callable[[SubmissionResult], str] | None = None) -> list[Written]:
    """The kit's own feedback page of each student as feedback/<student>/<lab>/<notebook stem>.html, with
    timestamp.txt and submission_secret.txt, laid out as `nbgrader generate_feedback` lays out its own, so that
    `nbgrader release_feedback` ships it.

    `render` makes a page from a result (default: report.feedback_html in `lang`, titled with the lab's name).
    The two small files come from autograded/ (write_autograded copied them there, checked) or, failing that, from
    submitted/ (checked the same way). See the module docstring for when generate_feedback replaces the page."""
    from .report import feedback_html

    render = render or (lambda r: feedback_html(r, lang=lang, assignment_title=assignment.name))
    stem = Path(assignment.notebook).stem
    written = []
    for result, folder in _student_folders(course, course.feedback, results, assignment, written):
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.html"
        write_atomic(path, render(result))
        autograded = course.folder(course.autograded, result.student_id, assignment.name)
        if (autograded / TIMESTAMP).is_file() or (autograded / SECRET).is_file():
            notes = _copy_small_files(autograded, folder, result)
        else:
            notes = _copy_small_files(course.folder(course.submitted, result.student_id, assignment.name), folder,
                                      result)
        written.append(Written(result.student_id, path, "; ".join(notes) or None))
    return written


