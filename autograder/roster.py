"""Who is in the class: the roster a TA keeps or downloads from the LMS, and the ids each LMS knows a student by.

`Student` is plain data that every step shares. `read_roster` reads the class list a TA keeps (the kit's CSV) or
downloads (a Canvas gradebook export, a Moodle grading worksheet) into a `Roster`, which intake.py uses to tell
whose each downloaded file is.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path


@dataclass(frozen=True)
class Student:
    """A student as the course and its LMS know them. Only student_id is required; the rest is what the roster
    or the file's name said, used to match files and to fill the LMS's columns on export."""

    student_id: str  # the course's id: the gradebook's, the results' and the feedback's
    name: str = ""  # full name as the LMS shows it
    email: str = ""
    sis_id: str = ""  # Canvas "SIS User ID"; Gradescope "SID"
    login: str = ""  # Canvas "SIS Login ID", or the login part of a Canvas file name
    section: str = ""
    canvas_id: str = ""  # Canvas user id ("ID" column; the number in a Canvas file name)
    moodle_id: str = ""  # Moodle participant id (the worksheet's "Participant 12345"; the number in the folder name)

    def ids(self) -> dict[str, str]:
        """The non-empty fields other than student_id, as results record them."""
        return {k: v for k, v in vars(self).items() if k != "student_id" and v}


# --- Reading a roster file ---------------------------------------------------------------------------------------
#
# Three CSV shapes, told apart by their header: the kit's own, a Canvas gradebook export and a Moodle offline
# grading worksheet. The file is untrusted input like any other: its size is bounded, it is parsed as data only,
# and every complaint names the line and says what to change.

MAX_ROSTER_BYTES = 16 << 20  # a class of thousands is well under 1 MB
KIT_COLUMNS = ("student_id", "name", "email", "sis_id", "login", "section", "canvas_id", "moodle_id")
# Columns whose values must be unique: a file name matched through any of them must lead to one student.
_UNIQUE = ("student_id", "sis_id", "login", "email", "canvas_id", "moodle_id")

_EXPECTED = (
    "A roster is a CSV file (UTF-8) in one of three shapes: the kit's own (header "
    f"{','.join(KIT_COLUMNS)}; only student_id is required), a Canvas gradebook export (Grades > Export: "
    "Student,ID,SIS User ID,SIS Login ID,Section,...), or a Moodle offline grading worksheet (Assignment > "
    "Download grading worksheet: Identifier,Full name,Email address,...)."
)


class RosterError(ValueError):
    """The roster file cannot be used; the message names the file, the line and what to fix."""


class Roster:
    """The class: its students, found by any id a file name or an LMS may carry.

    Lookups ignore case and Unicode normalisation for ids typed by people (student id, login, email) and
    compare the LMS's numeric ids as they are. A name shared by two students finds neither: names are a
    last resort, and a guess could grade one student's work as another's.
    """

    def __init__(self, students: Iterable[Student], *, kind: str = "kit", source: str = "",
                 submitted_at: Mapping[str, datetime] | None = None, notes: Sequence[str] = (),
                 lines: Sequence[int] | None = None) -> None:
        self.students: tuple[Student, ...] = tuple(students)
        self.kind = kind  # "kit", "canvas" or "moodle": the shape it was read from
        self.source = source  # the file it was read from, for messages
        # Moodle's "Last modified (submission)", by student_id: when the file itself says nothing.
        self.submitted_at: dict[str, datetime] = dict(submitted_at or {})
        self.notes: tuple[str, ...] = tuple(notes)  # what was read as unknown rather than refused
        self._index: dict[str, dict[str, Student]] = {f: {} for f in _UNIQUE}
        where = [f"line {n}" for n in lines] if lines else [f"student {i + 1}" for i in range(len(self.students))]
        first: dict[tuple[str, str], str] = {}
        for student, at in zip(self.students, where):
            for f in _UNIQUE:
                value = getattr(student, f)
                if not value:
                    continue
                key = _id_key(f, value)
                if key in self._index[f]:
                    raise RosterError(
                        f"{self._label()}{at}: {f} {value!r} is also the {f} of {first[f, key]} "
                        f"({self._index[f][key].student_id!r}); every student needs their own. Fix or remove one "
                        "of the two rows."
                    )
                self._index[f][key] = student
                first[f, key] = at
        self._names: dict[str, list[Student]] = {}
        for student in self.students:
            if student.name:
                self._names.setdefault(_name_key(student.name), []).append(student)

    def _label(self) -> str:
        return f"{self.source}, " if self.source else ""

    def __len__(self) -> int:
        return len(self.students)

    def __iter__(self) -> Iterator[Student]:
        return iter(self.students)

    def __repr__(self) -> str:
        return f"Roster({len(self.students)} students, kind={self.kind!r}, source={self.source!r})"

    def _get(self, field: str, value: str) -> Student | None:
        return self._index[field].get(_id_key(field, value)) if value else None

    def by_student_id(self, value: str) -> Student | None:
        return self._get("student_id", value)

    def by_sis_id(self, value: str) -> Student | None:
        return self._get("sis_id", value)

    def by_login(self, value: str) -> Student | None:
        return self._get("login", value)

    def by_email(self, value: str) -> Student | None:
        return self._get("email", value)

    def by_canvas_id(self, value: str) -> Student | None:
        return self._get("canvas_id", value)

    def by_moodle_id(self, value: str) -> Student | None:
        return self._get("moodle_id", value)

    def by_name(self, value: str) -> Student | None:
        """The one student of that name (spaces, case and Moodle's `_` → space ignored), or None."""
        found = self._names.get(_name_key(value), []) if value else []
        return found[0] if len(found) == 1 else None


def _id_key(field: str, value: str) -> str:
    value = value.strip()
    if field in ("canvas_id", "moodle_id"):
        return value
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).casefold())


def _name_key(name: str) -> str:
    # Moodle writes a name into a file name with "_" turned into spaces; people's names keep one space.
    return " ".join(unicodedata.normalize("NFC", name).replace("_", " ").split()).casefold()


def read_roster(path: str | Path, *, tz: tzinfo | None = None) -> Roster:
    """Read a roster CSV in any of the three shapes (see `_EXPECTED`); raise RosterError saying what to fix.

    ``tz`` is the Moodle server's time zone, for the worksheet's "Last modified (submission)" times, which
    carry none; by default the time zone of this machine (usually the same place as the course's Moodle).
    """
    path = Path(path)
    rows = _csv_rows(path)
    if not rows:
        raise RosterError(f"{path} is empty. {_EXPECTED}")
    header_line, header = rows[0]
    header = [_clean_header(h) for h in header]
    body = rows[1:]
    if "student_id" in (h.lower() for h in header):
        return _read_kit(path, header_line, header, body)
    if "Identifier" in header and "Full name" in header:
        return _read_moodle(path, header_line, header, body, tz)
    if "Student" in header and "ID" in header:
        return _read_canvas(path, header_line, header, body)
    shown = ",".join(h for h in header[:8]) + (",..." if len(header) > 8 else "")
    raise RosterError(f"{path}, line {header_line}: the header ({_printable(shown)}) is not one this kit knows. "
                      f"{_EXPECTED}")


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows with the line each starts on."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_ROSTER_BYTES + 1)
    except OSError as e:
        raise RosterError(f"cannot read the roster {path}: {e.strerror or e}. Check the path.") from e
    if len(raw) > MAX_ROSTER_BYTES:
        raise RosterError(f"{path} is larger than {MAX_ROSTER_BYTES >> 20} MB; is it really a roster CSV?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise RosterError(
            f"{path}, line {line}: not UTF-8 text. Save the roster as \"CSV UTF-8\" (Excel: Save As > "
            "CSV UTF-8 (Comma delimited)) and try again."
        ) from e
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    line = 1
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as e:
        raise RosterError(f"{path}, line {line}: not a CSV row this kit can read ({e}). Save the file again as "
                          "CSV UTF-8 from a spreadsheet program.") from e
    return rows


def _clean_header(h: str) -> str:
    return " ".join(h.split())


def _cells(path: Path, line: int, header: list[str], cells: list[str]) -> dict[str, str]:
    if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
        raise RosterError(f"{path}, line {line}: {len(cells)} values but the header has {len(header)} columns. "
                          "Quote values that contain commas, or remove the extra values.")
    row = {h: c.strip() for h, c in zip(header, cells)}
    for h in header[len(cells):]:
        row[h] = ""
    return row


def _student(path: Path, line: int, what: str, **fields: str) -> Student:
    from .submissions import validate_student_id  # submissions imports this module for Student

    student_id = unicodedata.normalize("NFC", fields.pop("student_id"))
    if not student_id:
        raise RosterError(f"{path}, line {line}: no student id ({what}). Fill it in or remove the row.")
    reason = validate_student_id(student_id)
    if reason:
        raise RosterError(f"{path}, line {line}: the student id '{_printable(student_id)}' ({what}) cannot be "
                          f"used: {reason}. Correct it in the roster.")
    return Student(student_id, **{k: unicodedata.normalize("NFC", v) for k, v in fields.items()})


def _read_kit(path: Path, header_line: int, header: list[str], body) -> Roster:
    names = [h.lower() for h in header]
    unknown = [h for h, n in zip(header, names) if n not in KIT_COLUMNS]
    if unknown:
        raise RosterError(f"{path}, line {header_line}: unknown column(s) {', '.join(map(repr, unknown))}. "
                          f"The kit's roster has the columns {','.join(KIT_COLUMNS)} (only student_id is "
                          "required); rename or remove the others.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RosterError(f"{path}, line {header_line}: column(s) {', '.join(repeated)} appear twice; keep one.")
    students, lines = [], []
    for line, cells in body:
        row = _cells(path, line, names, cells)
        students.append(_student(path, line, "column student_id", **{c: row.get(c, "") for c in KIT_COLUMNS}))
        lines.append(line)
    return Roster(students, kind="kit", source=str(path), lines=lines)


def _read_canvas(path: Path, header_line: int, header: list[str], body) -> Roster:
    """A Canvas gradebook export. Its "Points Possible" row, muted-assignment rows and any row without a Canvas
    user id are not students. The student id is the SIS Login ID, else the SIS User ID, else the Canvas ID: the
    first that the university's other systems also know. The name stays as Canvas writes it ("Last, First"), so
    that an export back to Canvas shows the same Student column."""
    students, lines = [], []
    for line, cells in body:
        row = _cells(path, line, header, cells)
        canvas_id = row.get("ID", "")
        if not canvas_id or row.get("Student", "") == "Student" or "Points Possible" in row.get("Student", ""):
            continue
        if not canvas_id.isascii() or not canvas_id.isdigit():
            raise RosterError(f"{path}, line {line}: the ID '{_printable(canvas_id)}' is not a Canvas user id "
                              "(a number). Export the gradebook again from Canvas, unchanged.")
        sis_id, login = row.get("SIS User ID", ""), row.get("SIS Login ID", "")
        what = "SIS Login ID" if login else "SIS User ID" if sis_id else "ID"
        students.append(_student(path, line, what, student_id=login or sis_id or canvas_id,
                                 name=row.get("Student", ""), sis_id=sis_id, login=login,
                                 section=row.get("Section", ""), canvas_id=canvas_id))
        lines.append(line)
    return Roster(students, kind="canvas", source=str(path), lines=lines)


_PARTICIPANT = re.compile(r"(\d+)\s*\Z")


def _read_moodle(path: Path, header_line: int, header: list[str], body, tz: tzinfo | None) -> Roster:
    """A Moodle offline grading worksheet.

    The student id is the "ID number" (the university's student number) when the site shows that column, else
    the email address, else the worksheet's "Participant N". Not the participant number alone: Moodle numbers
    participants per assignment, so the same student would get a new id in every lab and the gradebook across
    labs would split them; an email address (whole, since local parts repeat across domains) stays the same.
    """
    students, lines, times, notes = [], [], {}, []
    time_column = "Last modified (submission)"
    for line, cells in body:
        row = _cells(path, line, header, cells)
        identifier = row.get("Identifier", "")
        m = _PARTICIPANT.search(identifier)
        if not m:
            raise RosterError(f"{path}, line {line}: the Identifier '{_printable(identifier)}' does not end in a "
                              "participant number (Moodle writes \"Participant 12345\"). Download the worksheet "
                              "again from Moodle, unchanged.")
        email, number = row.get("Email address", ""), row.get("ID number", "")
        what = "ID number" if number else "Email address" if email else "Identifier"
        student = _student(path, line, what, student_id=number or email or identifier,
                           name=row.get("Full name", ""), email=email, sis_id=number, moodle_id=m.group(1))
        students.append(student)
        lines.append(line)
        text = row.get(time_column, "")
        if text and text != "-":
            when = parse_lms_time(text, tz)
            if when is None:
                notes.append(f"{path}, line {line}: {time_column} '{_printable(text)}' is not a time this kit "
                             f"reads; {student.student_id}'s submission time is unknown")
            else:
                times[student.student_id] = when
    return Roster(students, kind="moodle", source=str(path), submitted_at=times, notes=notes, lines=lines)


_JAPANESE_TIME = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日.*?(\d{1,2}):(\d{2})")


def parse_lms_time(text: str, tz: tzinfo | None = None) -> datetime | None:
    """A time as an LMS shows it to people ("Monday, 7 December 2026, 11:59 PM", or Moodle's Japanese
    "2026年 12月 7日(月曜日) 23:59"), aware; naive ones are in ``tz`` (default: this machine's time zone).
    None when it is not clearly a date with a time: dateutil fills missing parts from today, which would
    silently invent a submission time."""
    text = text.strip()
    if len(text) > 100:
        return None
    m = _JAPANESE_TIME.search(text)
    try:
        if m:
            when = datetime(*map(int, m.groups()))  # type: ignore[misc]
        else:
            if not re.search(r"\d{4}", text) or not re.search(r"\d{1,2}:\d{2}", text):
                return None
            from dateutil import parser

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an unknown zone name is dropped: the time counts as naive
                when = parser.parse(text)
    except (ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz) if tz is not None else when.astimezone()
    return when


def _printable(s: str) -> str:
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") else c for c in s)
