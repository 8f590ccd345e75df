"""Turn what a TA hands in into a list of submissions, safely.

Accepted inputs (``collect(path, assignment=...)``):

1. a folder of ``<student_id>.ipynb`` files;
2. an nbgrader tree ``submitted/<student_id>/<assignment>/<notebook>.ipynb``, given as the
   course root (the folder holding ``submitted/``) or as ``submitted/`` itself;
3. a ``.zip`` of either, read member by member with :mod:`zipfile` and never extracted.
   One wrapper folder around everything (as LMS bulk downloads add) is looked through.

Flat notebooks and nbgrader student folders may sit side by side in one input; both are
collected (so a student present in both shows up as a duplicate rather than being lost).

``scan(...)`` is the layer underneath: it opens the input, finds where the notebooks are
(`Found`: the raw file or folder name, the shape it was found in, nbgrader's timestamp.txt)
and reads one only when asked, under the same limits. ``collect`` takes each id from the
name as it is; intake.py reads the LMS's naming conventions (Canvas, Moodle) out of the names
first, and passes ``student_folder`` so that Moodle's per-student folders are found too.

Decisions on the open questions:

* Student ids come from file/folder names, are normalised to Unicode NFC, and are then
  checked by :func:`validate_student_id`. Leading/trailing whitespace is *rejected*, not
  stripped: stripping would silently turn ``"alice .ipynb"`` into ``alice``, while a
  rejected row tells the TA exactly which file to rename. Spaces inside an id, any script
  (``山田太郎``) and shell metacharacters are valid: ids are plain data, never shell input.
* Ids are kept case-sensitively, but two ids that differ only in case (``str.casefold``)
  or in Unicode normalisation are reported as duplicates, because case-folding file
  systems (macOS, Windows) cannot keep both apart. Every member of a duplicate group gets
  a problem; nothing is silently picked.
* nbgrader: a student folder without ``<assignment>/`` is not listed. If ``<assignment>/``
  lacks the expected notebook, the row gets ``no <notebook> in submission`` (naming any
  other notebooks found). A lone differently-named notebook is *not* accepted: nbgrader
  itself grades by notebook name, and guessing could grade a scratch copy.
* Hidden files and folders (``.*``, hence ``.ipynb_checkpoints``) and ``__MACOSX`` are
  ignored everywhere; other non-notebook files are ignored with an INFO log message.
* Zip member names are treated with ``\\`` as a path separator (Windows tools write it).
  Members with an absolute path, a drive letter or a ``..`` component are never placed in
  the tree; if they look like notebooks they become rows (student id = the escaped member
  name) with problem ``unsafe path in archive (...)``, otherwise they are logged.
* Symbolic links in a folder input are followed only when they resolve inside the input
  folder (a course root's ``submitted/`` link is trusted: the TA made it), and links inside
  an nbgrader student folder only when they stay inside that student's folder, so a link
  to a classmate's notebook is refused too. A refused link becomes a problem row, even
  when it is a whole student folder (loud is better than silently dropping a student).
* ``max_total_bytes`` caps the bytes read over the whole input (folder or zip, including
  bytes of members later found too large). Exceeding it raises :class:`SubmissionsError`:
  it is a property of the batch, not of one student.
* When a row has a problem, ``student_id`` may be a best-effort display name (control
  characters escaped, long names shortened) rather than a valid id.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import unicodedata
import zipfile
import zlib
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .roster import Student

log = logging.getLogger(__name__)

MAX_STUDENT_ID_CHARS = 128
_CHUNK = 1 << 16
# Zero-width (non-)joiners are invisible but needed to spell names in some scripts; other
# invisible formatting characters (text-direction overrides, zero-width spaces) only make
# an id look like someone else's in a report.
_NEEDED_FORMAT_CHARS = frozenset("\u200c\u200d")
_DRIVE = re.compile(r"[A-Za-z]:")


class SubmissionsError(ValueError):
    """The input as a whole is unusable (missing, not a folder or zip, corrupt, empty)."""


@dataclass(frozen=True)
class Submission:
    student_id: str
    notebook: bytes | None  # raw notebook bytes; None when the submission is unusable
    source: str  # where it came from, for messages
    problem: str | None = None  # None if fine, else a short English reason
    submitted_at: datetime | None = None  # aware; from nbgrader's timestamp.txt or the LMS, None when unknown
    late_mark: bool = False  # the LMS marked it late without saying when (Canvas's _LATE_)
    student: Student | None = None  # who it is, with the LMS's ids (roster.py); None: only student_id is known


def validate_student_id(s: str) -> str | None:
    """Return why ``s`` is not a usable student id, or None if it is.

    Callers that take ids from names should NFC-normalise first, as :func:`collect` does.
    """
    if not s:
        return "empty"
    if len(s) > MAX_STUDENT_ID_CHARS:
        return f"longer than {MAX_STUDENT_ID_CHARS} characters"
    if s != s.strip():
        return "leading or trailing whitespace"
    if s in (".", ".."):
        return f"{s!r} is not a name"
    if "/" in s or "\\" in s:
        return "contains a path separator (/ or \\)"
    for c in s:
        category = unicodedata.category(c)
        if category == "Cs":
            # os.listdir turns bytes that are not valid UTF-8 into lone surrogates.
            return "contains bytes that are not valid text"
        if category in ("Cc", "Zl", "Zp"):
            return f"contains control character U+{ord(c):04X}"
        if category == "Cf" and c not in _NEEDED_FORMAT_CHARS:
            return f"contains invisible formatting character U+{ord(c):04X}"
    return None


def collect(
    path: str | os.PathLike[str],
    *,
    assignment: str,
    notebook_name: str | None = None,
    max_notebook_bytes: int = 50 << 20,
    max_total_bytes: int = 2 << 30,
) -> list[Submission]:
    """List the submissions in a folder or zip, sorted by student id.

    ``notebook_name`` defaults to ``f"{assignment}.ipynb"``. Per-student problems become
    rows with ``problem`` set; only a wholly unusable input raises SubmissionsError.
    """
    with scan(path, assignment=assignment, notebook_name=notebook_name,
              max_notebook_bytes=max_notebook_bytes, max_total_bytes=max_total_bytes) as found:
        rows = [_row_of(f) for f in found.found]
        _flag_duplicates(rows)
        rows.sort(key=lambda r: (r.student_id, r.source))
        result = []
        for row in rows:  # read in sorted order so a total-size failure is deterministic
            data = None
            if not row.problems and row.file is not None:
                data, problem = found.read_file(row.file)
                if problem:
                    row.problems.append(problem)
            result.append(Submission(row.student_id, data, row.source, "; ".join(row.problems) or None))
        return result


# Where a notebook was found (Found.shape).
FILE = "file"  # a notebook directly in the submissions folder: <name>.ipynb
NBGRADER = "nbgrader"  # <student>/<assignment>/<notebook>, or a student folder that should have been one
FOLDER = "folder"  # <student folder>/<notebook>: a folder scan()'s student_folder accepted (Moodle's)
UNSAFE = "unsafe"  # a zip member whose path could escape; never read

MAX_TIMESTAMP_BYTES = 256  # nbgrader writes ~30 bytes; anything much longer is not a time


@dataclass(frozen=True)
class Found:
    """One notebook (or one place a notebook should have been) before any student id is taken from its name.

    `collect` takes the id from the name as it is; intake.py first reads the LMS's conventions out of it.
    """

    # NFC, not validated. FILE: the notebook's file name; NBGRADER/FOLDER: the student's folder; UNSAFE: escaped.
    name: str
    shape: str  # FILE, NBGRADER, FOLDER or UNSAFE
    source: str  # where it is, for messages
    file_name: str = ""  # NBGRADER/FOLDER: the notebook's own file name; "" when none was found
    problem: str | None = None  # known without reading (link outside, too large, no notebook, ...)
    _file: _File | None = field(default=None, repr=False, compare=False)
    _timestamp: _File | None = field(default=None, repr=False, compare=False)  # nbgrader's timestamp.txt

    @property
    def has_timestamp(self) -> bool:
        return self._timestamp is not None


@dataclass(frozen=True)
class Ignored:
    """Something in the input that is not graded (a PDF, a student folder without this lab), kept to be reported."""

    name: str  # its file or folder name, NFC
    source: str
    why: str


class Scan:
    """What `scan` found in an open input, read on demand under the input's limits.

    Reading is left to the caller so that only what gets graded is read: an LMS download may hold
    every resubmission, and only the latest of each student is worth its bytes.
    """

    def __init__(self, path: Path, found: list[Found], ignored: list[Ignored], limit: int,
                 budget: _Budget) -> None:
        self.path, self.found, self.ignored = path, found, ignored
        self._limit, self._budget = limit, budget

    def read(self, found: Found) -> tuple[bytes | None, str | None]:
        """The notebook's bytes, or None and why not (the problem a row then carries)."""
        if found.problem:
            return None, found.problem
        if found._file is None:
            return None, "no notebook in submission"
        return self.read_file(found._file)

    def read_timestamp(self, found: Found) -> tuple[bytes | None, str | None]:
        """The bytes of nbgrader's timestamp.txt next to the notebook: (None, None) when there is none."""
        f = found._timestamp
        if f is None:
            return None, None
        data, problem = self.read_file(f, MAX_TIMESTAMP_BYTES)
        if problem and problem.startswith("notebook is larger"):
            problem = f"timestamp.txt is larger than {MAX_TIMESTAMP_BYTES} bytes"
        return data, problem

    def read_file(self, file: _File, limit: int | None = None) -> tuple[bytes | None, str | None]:
        if file.problem:
            return None, file.problem
        return _read(file, self._limit if limit is None else limit, self._budget)


@contextmanager
def scan(
    path: str | os.PathLike[str],
    *,
    assignment: str,
    notebook_name: str | None = None,
    student_folder: Callable[[str], bool] | None = None,
    max_notebook_bytes: int = 50 << 20,
    max_total_bytes: int = 2 << 30,
) -> Iterator[Scan]:
    """Open a folder or zip and find where its notebooks are, reading none of them yet.

    ``student_folder(name)`` says which folders hold one student's notebook directly (Moodle's
    ``<Full Name>_<id>_assignsubmission_file_``); without it, only flat notebooks and nbgrader
    student folders are found, as :func:`collect` wants. The zip stays open, and the byte limits
    apply, until the ``with`` block ends. Raises SubmissionsError as :func:`collect` does.
    """
    path = Path(path)
    look = _Look(assignment, notebook_name or f"{assignment}.ipynb", student_folder or (lambda name: False))
    expected = _expected(assignment, look.notebook_name)
    budget = _Budget(max_total_bytes, path)
    if path.is_dir():
        # A course root's submitted/ may be a link (into an exchange directory, say): the
        # TA made it, so links are checked against where it leads.
        if (path / "submitted").is_dir() and not (path / "submitted" / assignment).is_dir():
            path = path / "submitted"
        root = _DiskDir(str(path), os.path.realpath(path), max_notebook_bytes)
        yield _scan_tree(path, root, [], look, max_notebook_bytes, budget)
        return
    if not path.exists():
        raise SubmissionsError(f"{path} does not exist. {expected}")
    if not path.is_file():
        raise SubmissionsError(f"{path} is neither a folder nor a zip archive. {expected}")
    if path.suffix.lower() == ".ipynb":
        raise SubmissionsError(
            f"{path} is a single notebook; put it in a folder as <student_id>.ipynb and pass the folder. {expected}"
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise SubmissionsError(
            f"{path} is not a folder or a readable zip archive ({e}); if it is a zip, download it again. {expected}"
        ) from e
    with archive:
        root, unsafe = _zip_tree(archive, str(path))
        yield _scan_tree(path, root, unsafe, look, max_notebook_bytes, budget)


def _expected(assignment: str, notebook_name: str) -> str:
    return (
        "Expected a folder of <student_id>.ipynb files, an nbgrader course folder (or its submitted/ folder) "
        f"laid out as submitted/<student_id>/{assignment}/{notebook_name}, or a .zip of either."
    )


# --- A small tree that looks the same for folders on disk and for zip archives ---------


@dataclass
class _File:
    source: str
    open: Callable[[], BinaryIO] | None = None
    problem: str | None = None  # known before reading (symlink, encrypted, too large, ...)


class _Dir:
    def __init__(self, source: str, problem: str | None = None) -> None:
        self.source, self.problem = source, problem
        self.dirs: dict[str, _Dir] = {}
        # A list, not a dict: a zip may hold the same member name twice.
        self.files: list[tuple[str, _File]] = []

    def listing(self) -> tuple[dict[str, _Dir], list[tuple[str, _File]]]:
        return self.dirs, self.files


class _DiskDir(_Dir):
    """A folder on disk, listed on first use so a big course root is never walked whole."""

    def __init__(self, path: str, root: str, limit: int, root_name: str = "the submissions folder") -> None:
        super().__init__(path)
        self._root, self._root_name, self._limit, self._listed = root, root_name, limit, False

    def confine(self) -> None:
        """From now on, links in this folder must stay inside it to be followed.

        Students control what is in their own folder: a link from alice's folder to bob's
        notebook must not get bob's work graded as alice's.
        """
        self._root, self._root_name = os.path.realpath(self.source), "the student's folder"
        self.dirs, self.files, self._listed = {}, [], False

    def listing(self) -> tuple[dict[str, _Dir], list[tuple[str, _File]]]:
        if not self._listed:
            self._scan()  # an OSError here is for the caller to report
            self._listed = True
        return self.dirs, self.files

    def _scan(self) -> None:
        for entry in sorted(os.scandir(self.source), key=lambda e: e.name):
            if _ignored(entry.name):
                continue
            name, path = entry.name, entry.path
            target = os.path.realpath(path)
            if not _is_within(target, self._root):
                # Following it could hand a TA's private files to the grader as a notebook.
                problem = f"symbolic link pointing outside {self._root_name}"
                if os.path.isdir(target):
                    self.dirs[name] = _Dir(path, problem)
                else:
                    self.files.append((name, _File(path, problem=problem)))
                continue
            try:
                st = os.stat(target)
            except OSError as e:
                problem = "broken symbolic link" if entry.is_symlink() else f"cannot read file ({e.strerror})"
                self.files.append((name, _File(path, problem=problem)))
                continue
            if stat.S_ISDIR(st.st_mode):
                self.dirs[name] = _DiskDir(path, self._root, self._limit, self._root_name)
            elif not stat.S_ISREG(st.st_mode):
                # A FIFO or device would block or never end when read.
                self.files.append((name, _File(path, problem="not a regular file")))
            elif st.st_size > self._limit:
                self.files.append((name, _File(path, problem=_too_large(self._limit))))
            else:
                self.files.append((name, _File(path, open=lambda t=target: _open_regular(t))))


def _open_regular(path: str) -> BinaryIO:
    # O_NONBLOCK: should the file have been swapped for a FIFO since we looked, the open
    # must not hang; the fstat check then refuses it.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError("not a regular file")
    return f


def _zip_tree(archive: zipfile.ZipFile, label: str) -> tuple[_Dir, list[Submission]]:
    """Build the tree of safe members; rows for notebook members with unsafe paths."""
    root, unsafe = _Dir(label), []
    for info in archive.infolist():
        name = _member_name(info)
        source = f"{label}:{_display(name, limit=None)}"
        parts, reason = _split_member(name)
        if reason:
            if name.rstrip("/").lower().endswith(".ipynb"):
                problem = f"unsafe path in archive ({reason})"
                unsafe.append(Submission(_display(name), None, source, problem))
            else:
                log.warning("ignoring %s: unsafe path in archive (%s)", source, reason)
            continue
        if not parts or any(_ignored(p) for p in parts):
            continue
        is_dir = name.endswith("/")
        node = root
        for i, part in enumerate(parts if is_dir else parts[:-1]):
            node = node.dirs.setdefault(part, _Dir(f"{label}:{'/'.join(parts[: i + 1])}/"))
        if not is_dir:
            node.files.append((parts[-1], _zip_member(archive, info, source)))
    return root, unsafe


def _member_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if not info.flag_bits & 0x800:
        # Many tools write UTF-8 names without setting the UTF-8 flag; zipfile then
        # decodes them as cp437 and 山田太郎 would come out as mojibake.
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass
    return name.replace("\\", "/")


def _split_member(name: str) -> tuple[list[str], str | None]:
    """Split a member name into path parts, or say why it is unsafe."""
    if name.startswith("/"):
        return [], "absolute path"
    if _DRIVE.match(name):
        return [], "drive letter"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return [], "'..' in path"
    return parts, None


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> _File:
    if stat.S_ISLNK(info.external_attr >> 16):
        return _File(source, problem="symbolic link in archive")
    if info.flag_bits & 0x1:
        return _File(source, problem="encrypted archive member")
    return _File(source, open=lambda: archive.open(info))


# --- Finding the submissions in the tree ----------------------------------------------


@dataclass
class _Row:
    student_id: str
    source: str
    file: _File | None
    problems: list[str] = field(default_factory=list)
    dup_key: str | None = None  # None: not compared for duplicates (id already invalid)


@dataclass(frozen=True)
class _Look:
    """What the scan looks for."""

    assignment: str
    notebook_name: str
    is_folder: Callable[[str], bool]  # a student folder holding the notebook directly


def _scan_tree(path: Path, root: _Dir, unsafe: list[Submission], look: _Look, limit: int, budget: _Budget) -> Scan:
    ignored: list[Ignored] = []
    try:
        found = _found(_find_base(root, look), look, ignored)
    except OSError as e:
        raise SubmissionsError(f"cannot read {path}: {e.strerror or e}") from e
    found += [Found(s.student_id, UNSAFE, s.source, problem=s.problem) for s in unsafe]
    if not found:
        raise SubmissionsError(
            f"no submissions for assignment {look.assignment!r} found in {path}. "
            f"{_expected(look.assignment, look.notebook_name)}"
        )
    return Scan(path, found, ignored, limit, budget)


def _row_of(found: Found) -> _Row:
    if found.shape == UNSAFE:
        return _Row(found.name, found.source, None, [found.problem or ""])
    raw_id = found.name[: -len(".ipynb")] if found.shape == FILE else found.name
    return _row(raw_id, found.source, found._file, found.problem)


def _find_base(root: _Dir, look: _Look) -> _Dir:
    """The folder whose children are the submissions: look into submitted/ or one wrapper."""
    base = _submitted_or_self(root, look.assignment)
    dirs, files = base.listing()
    # Submissions are looked for before unwrapping: a zip of one student's nbgrader folder
    # also has a single top-level folder, and that folder is the student, not a wrapper.
    if base is root and len(dirs) == 1 and not _has_submissions(dirs, files, look):
        wrapper = next(iter(dirs.values()))
        if wrapper.problem is None:
            return _submitted_or_self(wrapper, look.assignment)
    return base


def _submitted_or_self(d: _Dir, assignment: str) -> _Dir:
    submitted = d.listing()[0].get("submitted")
    # A student whose id happens to be "submitted" has the assignment folder right inside.
    if submitted is None or submitted.problem or _child_dir(submitted, assignment) is not None:
        return d
    return submitted


def _has_submissions(dirs: dict[str, _Dir], files: list[tuple[str, _File]], look: _Look) -> bool:
    if any(_is_notebook(name) for name, _ in files):
        return True
    for name, d in dirs.items():
        if look.is_folder(_nfc(name)):
            return True
        try:
            if d.problem is None and _child_dir(d, look.assignment) is not None:
                return True
        except OSError:
            pass  # reported as that student's problem later
    return False


def _found(base: _Dir, look: _Look, ignored: list[Ignored]) -> list[Found]:
    dirs, files = base.listing()
    found = []
    for name, f in files:
        if _is_notebook(name):
            found.append(Found(_nfc(name), FILE, f.source, problem=f.problem, _file=f))
        else:
            _ignore(ignored, name, f.source, "not a notebook")
    for name, d in sorted(dirs.items()):
        if look.is_folder(_nfc(name)):
            found += _folder_found(name, d)
        else:
            found += _student_found(name, d, look, ignored)
    return found


def _student_found(name: str, student: _Dir, look: _Look, ignored: list[Ignored]) -> list[Found]:
    """An nbgrader student folder: <name>/<assignment>/<notebook_name>, with timestamp.txt beside it."""
    name = _nfc(name)
    if student.problem:
        return [Found(name, NBGRADER, student.source, problem=student.problem)]
    if isinstance(student, _DiskDir):
        student.confine()
    try:
        folder = _child_dir(student, look.assignment)
        if folder is None:
            _ignore(ignored, name, student.source, f"no {look.assignment}/ folder in it")
            return []
        if folder.problem:
            return [Found(name, NBGRADER, folder.source, problem=folder.problem)]
        files = folder.listing()[1]
    except OSError as e:
        return [Found(name, NBGRADER, student.source, problem=f"cannot read folder ({e.strerror or e})")]
    wanted = _nfc(look.notebook_name)
    found = [f for n, f in files if _nfc(n) == wanted]
    # The last one, should a zip repeat the name: nbgrader writes one timestamp.txt per submission.
    stamp = next((f for n, f in reversed(files) if n == "timestamp.txt"), None)
    if found:  # more than one only in a zip with repeated names: flagged as duplicates
        return [Found(name, NBGRADER, f.source, wanted, f.problem, f, stamp) for f in found]
    others = sorted(n for n, _ in files if _is_notebook(n))
    problem = f"no {look.notebook_name} in submission" + (f" (found {', '.join(others)})" if others else "")
    return [Found(name, NBGRADER, folder.source, problem=problem)]


def _folder_found(name: str, student: _Dir) -> list[Found]:
    """A folder holding one student's files directly (Moodle's): one Found per notebook in it.

    Which one to grade when there are several is the caller's choice (it knows the LMS's habits);
    a folder without any notebook is still one Found, so the student is not dropped.
    """
    name = _nfc(name)
    if student.problem:
        return [Found(name, FOLDER, student.source, problem=student.problem)]
    if isinstance(student, _DiskDir):
        student.confine()
    try:
        files = student.listing()[1]
    except OSError as e:
        return [Found(name, FOLDER, student.source, problem=f"cannot read folder ({e.strerror or e})")]
    notebooks = [(n, f) for n, f in files if _is_notebook(n)]
    if notebooks:
        return [Found(name, FOLDER, f.source, _nfc(n), f.problem, f) for n, f in notebooks]
    others = [_display(n, 40) for n, _ in files]
    listed = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    return [Found(name, FOLDER, student.source,
                  problem="no notebook in submission" + (f" (found {listed})" if others else ""))]


def _ignore(ignored: list[Ignored], name: str, source: str, why: str) -> None:
    log.info("ignoring %s: %s", source, why)
    ignored.append(Ignored(_nfc(name), source, why))


def _child_dir(d: _Dir, name: str) -> _Dir | None:
    wanted = _nfc(name)
    return next((c for n, c in sorted(d.listing()[0].items()) if _nfc(n) == wanted), None)


def _row(raw_id: str, source: str, file: _File | None, problem: str | None) -> _Row:
    student_id = _nfc(raw_id)
    reason = validate_student_id(student_id)
    if reason:
        return _Row(_display(student_id), source, None, [f"invalid student id: {reason}"])
    # NFC then casefold: ids that case-folding file systems would merge count as one.
    return _Row(student_id, source, file, [problem] if problem else [], _nfc(student_id.casefold()))


def _flag_duplicates(rows: list[_Row]) -> None:
    groups: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        if row.dup_key is not None:
            groups[row.dup_key].append(row)
    for group in groups.values():
        if len(group) > 1:
            for row in group:
                others = ", ".join(sorted(o.source for o in group if o is not row))
                row.problems.append(f"duplicate student id: also in {others}")


# --- Reading with limits ----------------------------------------------------------------


class _Budget:
    """Bytes left to read over the whole input, so many big members cannot exhaust memory."""

    def __init__(self, total: int, path: Path) -> None:
        self.total, self.left, self.path = total, total, path

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise SubmissionsError(
                f"{self.path}: the submissions add up to more than {_size(self.total)} "
                "(max_total_bytes); grade them in smaller batches or raise the limit"
            )


def _read(file: _File, limit: int, budget: _Budget) -> tuple[bytes | None, str | None]:
    """Read at most limit + 1 bytes; sizes in zip headers are never trusted."""
    assert file.open is not None
    try:
        with file.open() as f:
            chunks, size = [], 0
            while size <= limit:
                chunk = f.read(min(_CHUNK, limit + 1 - size))
                if not chunk:
                    return b"".join(chunks), None
                budget.spend(len(chunk))
                chunks.append(chunk)
                size += len(chunk)
    except SubmissionsError:
        raise
    except NotImplementedError as e:
        return None, f"unsupported compression in archive ({e})"
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        return None, f"corrupt archive member ({e})"
    except OSError as e:
        return None, f"cannot read file ({e.strerror or e})"
    except Exception as e:  # any other decoder failure is still one student's problem
        return None, f"cannot read file ({type(e).__name__}: {e})"
    return None, _too_large(limit)


# --- Small helpers ----------------------------------------------------------------------


def _ignored(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _is_notebook(name: str) -> bool:
    return name.lower().endswith(".ipynb") and len(name) > len(".ipynb")


def _is_within(target: str, root: str) -> bool:
    return os.path.commonpath([target, root]) == root


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _too_large(limit: int) -> str:
    return f"notebook is larger than {_size(limit)}"


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MB" if n >= 1 << 20 else f"{n} bytes"


def _display(s: str, limit: int | None = MAX_STUDENT_ID_CHARS) -> str:
    """A name safe to print in a report: invisible and control characters escaped."""
    out = "".join(
        ascii(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") else c
        for c in s
    )
    return out if limit is None or len(out) <= limit else out[:limit] + "…"
