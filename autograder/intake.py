"""From what a TA downloads to one submission per student: the LMS's file names read, the roster matched,
the latest kept, and nothing dropped without a line in the summary.

`gather(path, assignment=..., roster=...)` reads a folder or zip through submissions.scan (the same safe
tree and limits as `collect`: nothing extracted, links confined, sizes bounded) and recognises, file by
file, so that one download may mix them:

* Canvas's bulk download: flat ``<login>_<userid>_<attachmentid>_<original name>``, with ``_LATE_`` after
  the login when Canvas marked it late. The original name is the student's own (``Copy of lab.ipynb``)
  and may end in Canvas's resubmission suffix ``-N`` (``lab-1.ipynb``: attempt 1).
* Moodle's download: a folder ``<Full Name>_<id>_assignsubmission_file_/`` holding the student's files,
  or, from older Moodles, flat ``<Full Name>_<id>_assignsubmission_file_<name>``. The number is the
  participant id of the grading worksheet ("Participant 12345"). Online-text entries
  (``_assignsubmission_onlinetext_``) are not graded.
* nbgrader's ``submitted/<student>/<assignment>/<notebook>``, with ``timestamp.txt`` beside it.
* a plain folder of ``<student_id>.ipynb``.

Decisions:

* Who: with a roster, Canvas files are matched by user id, then login; Moodle by participant id, then
  full name; nbgrader and plain names by student id, then email (case and Unicode normalisation ignored).
  Canvas user ids never change, so a login whose rostered student has another Canvas id is someone else.
  Moodle numbers participants per assignment, so a name is trusted across numbers (a worksheet kept
  from another lab), except when that student's own number is also in the download: then the namesake
  is someone else. Name matches across numbers are listed in one note. A name two rostered students
  share matches neither. With a roster, a plain file name that is a rostered id (or email) is taken as
  such even if it looks like an LMS name (``st_2024_0001_lab.ipynb``).
  Without a roster (or for a file that matches nobody), the id is the Canvas login or the Moodle full
  name; when two different LMS ids share one, each becomes ``<login>_<userid>`` / ``<name>_<id>``, and so
  does one that would take a rostered student's id.
* Latest wins: within one student, by the submission time when every file has one, else (Canvas only)
  by the attempt (``-N``) then the attachment id, which Canvas hands out in increasing order. The earlier
  ones are not read, only listed (`Intake.superseded`, with notebook None). Files that cannot be ordered (a Canvas file beside a plain
  one, equal times) are all kept as "duplicate student id" problem rows, as `collect` does: the TA picks.
* Moodle folders with several notebooks: the one named like the assignment (ignoring case and copy
  suffixes such as ``(1)``, ``-1``, ``Copy of``) is graded; when none or several are, the folder is a
  problem row naming them.
* Times: nbgrader's timestamp.txt is read as nbgrader reads it (dateutil; a naive time is UTC); one that
  does not parse is a note, and the time stays unknown. A Moodle worksheet's times (from the roster)
  apply to the graded submission when its file gives none.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path

from . import submissions
from .roster import Roster, Student
from .submissions import FILE, FOLDER, NBGRADER, UNSAFE, Found, Ignored, Submission, validate_student_id

CANVAS, MOODLE, PLAIN = "canvas", "moodle", "plain"  # and submissions.NBGRADER ("nbgrader")

_CANVAS_FILE = re.compile(
    r"(?P<login>.+?)_(?:(?P<late>LATE)_)?(?P<user>\d+)_(?P<attachment>\d+)_(?P<original>.+)\Z", re.S)
_MOODLE_ENTRY = re.compile(r"(?P<name>.+?)_(?P<id>\d+)_assignsubmission_(?P<plugin>[a-z]+)_(?P<rest>.*)\Z", re.S)
_RESUBMITTED = re.compile(r"-(?P<n>\d{1,4})\.ipynb\Z", re.I)


def _is_moodle_folder(name: str) -> bool:
    m = _MOODLE_ENTRY.match(name)
    return bool(m and m["plugin"] == "file" and not m["rest"])


@dataclass(frozen=True)
class Intake:
    """What a download holds, ready to grade, with everything that is not graded said out loud."""

    submissions: list[Submission]  # one per student (problem rows included), sorted by id: what gets graded
    superseded: list[tuple[Submission, str]]  # an earlier submission (not read) and the source graded instead
    unmatched: list[Submission]  # with a roster: rows of `submissions` whose file matches no rostered student
    missing: list[Student]  # rostered students with no submission at all
    kind: frozenset[str]  # the shapes seen: "canvas", "moodle", "nbgrader", "plain"
    ignored: list[Ignored] = field(default_factory=list)  # files and folders not graded (a PDF, online text)
    notes: list[str] = field(default_factory=list)  # what was read as unknown (a timestamp that does not parse)

    def summary_lines(self, lang: str = "en") -> list[str]:
        """The lines a TA's summary prints about what is not graded as handed in; [] when there is nothing."""
        ja = lang == "ja"
        out: list[str] = []

        def section(items: list, en: str, jp: str, line) -> None:
            if items:
                out.append((jp if ja else en).format(n=len(items), s="" if len(items) == 1 else "s"))
                out.extend("  " + _printable(line(x)) for x in items)

        section(self.superseded,
                "{n} earlier submission{s} not graded (a later one of the same student is):",
                "後から再提出されたため採点しない提出 {n} 件:",
                lambda x: f"{x[0].source} ({x[0].student_id}; {'採点する提出' if ja else 'graded'}: {x[1]})")
        section(self.unmatched,
                "{n} file{s} matching no student in the roster (graded under the id from the file name):",
                "名簿のどの学生にも当たらない提出 {n} 件（ファイル名の ID で採点）:",
                lambda s: f"{s.source} → {s.student_id}")
        section(self.missing,
                "{n} student{s} in the roster without a submission:",
                "提出のない名簿の学生 {n} 人:",
                lambda st: st.student_id + (f" ({st.name})" if st.name else ""))
        section(self.ignored,
                "{n} file{s} or folder{s} in the download not graded:",
                "採点の対象にならないファイル・フォルダ {n} 件:",
                lambda i: f"{i.source}: {i.why}")
        section(self.notes, "{n} note{s}:", "注意 {n} 件:", lambda note: note)
        return out


def gather(
    path: str | Path,
    *,
    assignment: str,
    notebook_name: str | None = None,
    roster: Roster | None = None,
    **limits: int,
) -> Intake:
    """Read a download (folder or zip) into an Intake. ``limits`` are submissions.scan's byte limits
    (max_notebook_bytes, max_total_bytes). Raises SubmissionsError when the input as a whole is unusable."""
    notebook_name = notebook_name or f"{assignment}.ipynb"
    with submissions.scan(path, assignment=assignment, notebook_name=notebook_name,
                          student_folder=_is_moodle_folder, **limits) as scan:
        notes: list[str] = list(roster.notes) if roster else []
        entries = [_parse(f, roster) for f in _one_per_moodle_folder(scan.found, assignment, notebook_name)]
        for e in entries:
            if e.found.has_timestamp:
                _read_timestamp(scan, e, notes)
        _assign_ids(entries, roster, notes)
        rows, superseded = _latest(entries)
        if roster:
            for e in rows:
                if e.submitted_at is None and e.matched and e.student_id in roster.submitted_at:
                    e.submitted_at = roster.submitted_at[e.student_id]
        rows.sort(key=lambda e: (e.student_id, e.found.source))
        graded = [_submission(e, scan) for e in rows]  # read in sorted order: a total-size failure is deterministic
    ignored = [_relabel(i) for i in scan.ignored]
    matched = {e.student_id for e in rows if e.matched}
    return Intake(
        submissions=graded,
        superseded=sorted(((_submission(e), by) for e, by in superseded), key=lambda x: (x[0].student_id, x[0].source)),
        unmatched=[s for s, e in zip(graded, rows) if roster is not None and not e.matched],
        missing=[st for st in roster.students if st.student_id not in matched] if roster else [],
        kind=frozenset(e.kind for e in entries if e.found.shape != UNSAFE),
        ignored=ignored,
        notes=notes,
    )


# --- One entry per file: what its name says -------------------------------------------------------------------


@dataclass
class _Entry:
    found: Found
    kind: str  # CANVAS, MOODLE, NBGRADER or PLAIN
    told: str  # the id the name tells: Canvas login, Moodle full name, nbgrader folder, plain stem
    lms_id: str = ""  # Canvas user id or Moodle participant id
    attempt: int = 0  # Canvas: the -N of a resubmitted file name
    attachment: int | None = None  # Canvas: the attachment id
    late: bool = False
    submitted_at: datetime | None = None
    student_id: str = ""
    student: Student | None = None
    matched: bool = False  # found in the roster
    problems: list[str] = field(default_factory=list)
    key: str | None = None  # what two entries of one student share; None: never grouped (id unusable)


def _parse(found: Found, roster: Roster | None) -> _Entry:
    problems = [found.problem] if found.problem else []
    if found.shape == UNSAFE:
        return _Entry(found, PLAIN, found.name, problems=problems)
    if found.shape == NBGRADER:
        return _Entry(found, NBGRADER, found.name, problems=problems)
    if found.shape == FOLDER:
        m = _MOODLE_ENTRY.match(found.name)
        assert m is not None  # scan only calls folders that _is_moodle_folder accepted FOLDER
        return _Entry(found, MOODLE, m["name"], m["id"], problems=problems)
    assert found.shape == FILE
    stem = found.name[: -len(".ipynb")]
    if roster and (roster.by_student_id(stem) or roster.by_email(stem)):
        return _Entry(found, PLAIN, stem, problems=problems)
    # Moodle's mark first: a Moodle name whose file part has numbers (lab_1_2.ipynb) also fits Canvas's pattern.
    m = _MOODLE_ENTRY.match(found.name)
    if m and m["plugin"] == "file":
        return _Entry(found, MOODLE, m["name"], m["id"], problems=problems)
    m = _CANVAS_FILE.match(found.name)
    if m:
        resubmitted = _RESUBMITTED.search(m["original"])
        return _Entry(found, CANVAS, m["login"], m["user"], int(resubmitted["n"]) if resubmitted else 0,
                      int(m["attachment"]), late=bool(m["late"]), problems=problems)
    return _Entry(found, PLAIN, stem, problems=problems)


def _one_per_moodle_folder(found: list[Found], assignment: str, notebook_name: str) -> list[Found]:
    """Each Moodle folder's notebook to grade: the only one, or the one named like the assignment."""
    out = [f for f in found if f.shape != FOLDER]
    folders = sorted((f for f in found if f.shape == FOLDER), key=lambda f: f.name)
    for _, group in groupby(folders, key=lambda f: f.name):
        notebooks = list(group)
        if len(notebooks) == 1:
            out += notebooks
            continue
        wanted = {_base_name(assignment), _base_name(notebook_name)}
        like = [f for f in notebooks if _base_name(f.file_name) in wanted]
        exact = [f for f in like if _nfc(f.file_name) == _nfc(notebook_name)]
        pick = like if len(like) == 1 else exact if len(exact) == 1 else []
        if pick:
            out += pick
            continue
        names = ", ".join(sorted(_printable(f.file_name) for f in notebooks))
        problem = (f"several notebooks in submission ({names}); none is clearly {notebook_name}: "
                   "grade the right one by hand or ask the student to hand in one")
        out.append(replace(notebooks[0], problem=problem, _file=None))
    return out


_COPY_MARKS = [
    re.compile(p, re.I)
    for p in (r"\A(?:copy of|コピー ?〜?)\s*", r"\s*\(\d+\)\Z", r"-\d{1,4}\Z", r"[\s_-]*(?:-\s*)?copy(?:\s*\d+)?\Z",
              r"\s*(?:の)?コピー\Z", r"-checkpoint\Z")
]


def _base_name(name: str) -> str:
    """A notebook's name without the marks that copying and re-uploading add: case, (1), -1, "Copy of"."""
    s = _nfc(name).strip()
    if s.lower().endswith(".ipynb"):
        s = s[: -len(".ipynb")]
    before = None
    while before != s:
        before = s
        for mark in _COPY_MARKS:
            s = mark.sub("", s).strip()
    return s.casefold()


# --- Who each entry is ------------------------------------------------------------------------------------------


def _assign_ids(entries: list[_Entry], roster: Roster | None, notes: list[str]) -> None:
    if roster:
        _match(entries, roster, notes)
    rostered_keys = {_key(st.student_id) for st in roster.students} if roster else set()
    # Ids from names, for entries that matched nobody: one login (or name) used by two different LMS ids is
    # two students, and must not take a rostered student's id either.
    lms_ids: dict[tuple[str, str], set[str]] = {}
    for e in entries:
        if not e.matched and e.kind in (CANVAS, MOODLE):
            lms_ids.setdefault((e.kind, _key(e.told)), set()).add(e.lms_id)
    for e in entries:
        if e.matched:
            continue
        if e.found.shape == UNSAFE:
            e.student_id = e.told  # already escaped for display; never valid, never grouped
            continue
        told = _nfc(e.told)
        if e.kind in (CANVAS, MOODLE):
            shared = len(lms_ids[e.kind, _key(told)]) > 1 or _key(told) in rostered_keys
            e.student_id = f"{told}_{e.lms_id}" if shared else told
        else:
            e.student_id = told
        reason = validate_student_id(e.student_id)
        if reason:
            e.problems = [f"invalid student id: {reason}"]
            e.student_id = _printable(e.student_id)
            continue
        e.key = _key(e.student_id)
        if e.kind == CANVAS:
            e.student = Student(e.student_id, login=told, canvas_id=e.lms_id)
        elif e.kind == MOODLE:
            e.student = Student(e.student_id, name=told, moodle_id=e.lms_id)


def _match(entries: list[_Entry], roster: Roster, notes: list[str]) -> None:
    """Find each entry's student in the roster: by the LMS's id first, then by what people type.

    A Canvas user id is the same in every course, so a login naming a student whose Canvas id is another
    is another person. Moodle numbers participants per assignment, so a worksheet kept from another lab
    has other numbers: its names are trusted instead, unless the student's own number is in the download.
    """
    def take(e: _Entry, student: Student) -> None:
        e.student_id, e.student, e.matched, e.key = student.student_id, student, True, _key(student.student_id)

    moodle_ids = {e.lms_id for e in entries if e.kind == MOODLE}
    by_name = []
    for e in entries:
        if e.found.shape == UNSAFE:
            continue
        if e.kind == CANVAS:
            student = roster.by_canvas_id(e.lms_id)
            if student is None:
                student = roster.by_login(e.told)
                student = student if student and student.canvas_id in ("", e.lms_id) else None
        elif e.kind == MOODLE:
            student = roster.by_moodle_id(e.lms_id)
            if student is None:
                student = roster.by_name(e.told)
                student = student if student and student.moodle_id not in moodle_ids else None
                if student and student.moodle_id:
                    by_name.append(e.found.source)
        else:
            student = roster.by_student_id(e.told) or roster.by_email(e.told)
        if student:
            take(e, student)
    if by_name:
        shown = ", ".join(by_name[:3]) + (f" and {len(by_name) - 3} more" if len(by_name) > 3 else "")
        notes.append(f"{len(by_name)} Moodle submission(s) matched to the roster by full name, as their participant "
                     f"id is not the worksheet's (Moodle numbers participants per assignment; a worksheet of this "
                     f"assignment matches by number): {shown}")


# --- Latest wins ------------------------------------------------------------------------------------------------


def _latest(entries: list[_Entry]) -> tuple[list[_Entry], list[tuple[_Entry, str]]]:
    """The entries to grade (one per student unless they cannot be ordered), and the superseded ones."""
    rows: list[_Entry] = [e for e in entries if e.key is None]
    superseded: list[tuple[_Entry, str]] = []
    groups: dict[str, list[_Entry]] = {}
    for e in entries:
        if e.key is not None:
            groups.setdefault(e.key, []).append(e)
    for group in groups.values():
        if len(group) == 1:
            rows += group
            continue
        order = _order(group)
        if order is not None:
            ranked = sorted(group, key=order)
            winner = ranked[-1]
            if order(winner) != order(ranked[-2]):
                rows.append(winner)
                superseded += [(e, winner.found.source) for e in ranked[:-1]]
                continue
        for e in group:  # cannot tell which is the latest: the TA must
            others = ", ".join(sorted(o.found.source for o in group if o is not e))
            e.problems.append(f"duplicate student id: also in {others}")
            rows.append(e)
    return rows, superseded


def _order(group: list[_Entry]):
    """A sort key that puts one student's submissions in the order they were handed in, or None."""
    if all(e.submitted_at is not None for e in group):
        return lambda e: (e.submitted_at, e.attempt, e.attachment or 0)
    if all(e.kind == CANVAS and e.attachment is not None for e in group):
        # Canvas numbers attachments in upload order, across the whole instance: the later upload has the larger
        # id. The "-N" Canvas adds to a repeated file name only breaks ties (a student's own "lab-2.ipynb" has one).
        return lambda e: (e.attachment, e.attempt)
    return None


# --- Reading -----------------------------------------------------------------------------------------------------


def _submission(e: _Entry, scan: submissions.Scan | None = None) -> Submission:
    """The row for an entry; its notebook is read only when a scan is given (only graded rows are read)."""
    data, problems = None, list(e.problems)
    if scan is not None and not problems:
        data, problem = scan.read(e.found)
        if problem:
            problems.append(problem)
    return Submission(e.student_id, data, e.found.source, "; ".join(problems) or None,
                      submitted_at=e.submitted_at, late_mark=e.late, student=e.student)


def _read_timestamp(scan: submissions.Scan, e: _Entry, notes: list[str]) -> None:
    data, problem = scan.read_timestamp(e.found)
    where = f"{e.found.source}: timestamp.txt"
    if problem:
        notes.append(f"{where} cannot be read ({problem}); the submission time is unknown")
        return
    assert data is not None
    e.submitted_at, note = parse_nbgrader_timestamp(data)
    if note:
        notes.append(f"{where} {note}")


_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,30}(?:/[A-Za-z0-9_+-]{1,30}){0,2}\Z")


def parse_nbgrader_timestamp(data: bytes) -> tuple[datetime | None, str | None]:
    """A time from nbgrader's timestamp.txt (``2026-12-07 14:59:03.123456 UTC``), aware, and a note when it is
    unknown or guessed. As nbgrader reads it: a third word is the time zone (a name, or an offset in seconds);
    a time without one is UTC."""
    from dateutil import parser, tz

    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        return None, "is not text; the submission time is unknown"
    shown = _printable(text[:60])
    if not re.search(r"\d{4}", text) or not re.search(r"\d{1,2}:\d{2}", text):
        # dateutil fills what is missing from today's date, which would invent a submission time.
        return None, f"'{shown}' is not a date and time; the submission time is unknown"
    parts, zone, note = text.split(), None, None
    if len(parts) == 3:
        text, name = " ".join(parts[:2]), parts[2]
        if re.fullmatch(r"[+-]?\d{1,6}", name):
            zone = tz.tzoffset(None, int(name))
        elif _ZONE_NAME.match(name) and ".." not in name:
            zone = tz.gettz(name)
        if zone is None:
            note = f"names the time zone '{_printable(name)}', which is unknown; read as UTC, as nbgrader does"
            zone = timezone.utc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown zone name inside the text: the time counts as naive
            when = parser.parse(text)
    except (ValueError, OverflowError):
        return None, f"'{shown}' is not a date and time; the submission time is unknown"
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone or timezone.utc)
    try:
        return when.astimezone(timezone.utc), note
    except (ValueError, OverflowError):
        return None, f"'{shown}' is out of range; the submission time is unknown"


# --- Small helpers ----------------------------------------------------------------------------------------------


def _relabel(i: Ignored) -> Ignored:
    m = _MOODLE_ENTRY.match(i.name)
    if m and m["plugin"] == "onlinetext":
        return replace(i, why="Moodle online text, not a notebook")
    return i


def _key(student_id: str) -> str:
    # NFC then casefold: ids that case-folding file systems would merge count as one (as in submissions.py).
    return _nfc(_nfc(student_id).casefold())


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _printable(s: str) -> str:
    return submissions._display(s, limit=None)
