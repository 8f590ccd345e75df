"""Tests for autograder.submissions. Every input is built here; no binary fixtures."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from autograder import submissions
from autograder.submissions import Submission, SubmissionsError, collect, validate_student_id

A = "cnn_mnist"
MB = 1 << 20


def nb(tag: str) -> bytes:
    """A small, recognisable notebook."""
    return json.dumps({"cells": [], "metadata": {"tag": tag}, "nbformat": 4, "nbformat_minor": 5}).encode()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_zip(path: Path, members, compression=zipfile.ZIP_DEFLATED) -> Path:
    """Write members ((name, bytes) pairs or ZipInfo/bytes pairs) with names kept verbatim."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is what some tests want
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in members:
                info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
                info.compress_type = compression
                zf.writestr(info, data)
    return path


def patch_flags(data: bytes, *, set_bits: int = 0, clear_bits: int = 0) -> bytes:
    """Change the general-purpose flags of every local and central header."""
    buf = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = buf.find(signature)
        while i != -1:
            flags = int.from_bytes(buf[i + offset : i + offset + 2], "little")
            buf[i + offset : i + offset + 2] = ((flags | set_bits) & ~clear_bits).to_bytes(2, "little")
            i = buf.find(signature, i + 4)
    return bytes(buf)


def by_id(subs: list[Submission]) -> dict[str, Submission]:
    assert len({s.student_id for s in subs}) == len(subs), subs
    return {s.student_id: s for s in subs}


def ids(subs: list[Submission]) -> list[str]:
    return [s.student_id for s in subs]


def files_under(p: Path) -> set[Path]:
    return set(p.rglob("*"))


# --- Flat folders ----------------------------------------------------------------------


def test_flat_folder(tmp_path, caplog):
    d = tmp_path / "subs"
    write(d / "bob.ipynb", nb("bob"))
    write(d / "alice.ipynb", nb("alice"))
    write(d / "notes.txt", b"not a notebook")
    write(d / ".hidden.ipynb", nb("hidden"))
    write(d / ".ipynb_checkpoints" / "alice-checkpoint.ipynb", nb("checkpoint"))
    with caplog.at_level(logging.INFO, logger="autograder.submissions"):
        subs = collect(d, assignment=A)
    assert subs == [
        Submission("alice", nb("alice"), str(d / "alice.ipynb")),
        Submission("bob", nb("bob"), str(d / "bob.ipynb")),
    ]
    assert "notes.txt" in caplog.text


def test_ids_with_spaces_japanese_and_shell_metacharacters_are_plain_data(tmp_path):
    d = tmp_path / "subs"
    names = ["Jane Doe", "山田太郎", "$(rm -rf ~)", "a;b|c&d`x` 'q\"", "-rf", "x" * 128]
    for name in names:
        write(d / f"{name}.ipynb", nb(name))
    subs = by_id(collect(d, assignment=A))
    assert sorted(subs) == sorted(names)
    for name in names:
        assert subs[name].problem is None
        assert subs[name].notebook == nb(name)


def test_ids_are_normalised_to_nfc(tmp_path):
    d = tmp_path / "subs"
    write(d / "Jose\u0301.ipynb", nb("nfd"))
    assert ids(collect(d, assignment=A)) == ["Jos\u00e9"]


def test_order_is_sorted_by_student_id(tmp_path):
    d = tmp_path / "subs"
    for name in ["zoe", "Bob", "alice", "山田", "carol"]:
        write(d / f"{name}.ipynb", nb(name))
    assert ids(collect(d, assignment=A)) == sorted(["zoe", "Bob", "alice", "山田", "carol"])


@pytest.mark.skipif(sys.platform == "win32", reason="Windows forbids these file names")
def test_invalid_ids_in_a_folder_become_rows_with_reasons(tmp_path):
    d = tmp_path / "subs"
    write(d / "alice.ipynb", nb("alice"))
    write(d / " lead.ipynb", nb("lead"))
    write(d / "tab\tname.ipynb", nb("tab"))
    write(d / "back\\slash.ipynb", nb("backslash"))
    write(d / f"{'y' * 129}.ipynb", nb("long"))
    subs = by_id(collect(d, assignment=A))
    assert subs["alice"].problem is None
    assert subs[" lead"].problem == "invalid student id: leading or trailing whitespace"
    # Control characters are escaped in the id so a report stays on one line.
    assert subs["tab\\tname"].problem == "invalid student id: contains control character U+0009"
    assert subs["back\\slash"].problem == "invalid student id: contains a path separator (/ or \\)"
    assert subs["y" * 128 + "…"].problem == "invalid student id: longer than 128 characters"
    assert all(s.notebook is None for s in subs.values() if s.problem)


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that stores raw bytes")
def test_undecodable_file_name_is_an_invalid_id(tmp_path):
    d = tmp_path / "subs"
    d.mkdir()
    with open(os.path.join(os.fsencode(d), b"caf\xe9.ipynb"), "wb") as f:
        f.write(nb("latin1"))
    [sub] = collect(d, assignment=A)
    assert sub.student_id == "caf\\udce9"
    assert sub.problem == "invalid student id: contains bytes that are not valid text"


def test_too_large_notebook_on_disk_is_not_read(tmp_path, monkeypatch):
    d = tmp_path / "subs"
    write(d / "alice.ipynb", nb("alice"))
    with open(d / "big.ipynb", "wb") as f:
        f.truncate(1 << 30)  # sparse: costs no disk, but reading it whole would be slow
    opened = []
    real_open = submissions._open_regular
    monkeypatch.setattr(submissions, "_open_regular", lambda p: opened.append(p) or real_open(p))
    subs = by_id(collect(d, assignment=A, max_notebook_bytes=MB))
    assert subs["big"] == Submission("big", None, str(d / "big.ipynb"), "notebook is larger than 1 MB")
    assert subs["alice"].notebook == nb("alice")
    assert opened == [str(d / "alice.ipynb")]


def test_notebook_at_exactly_the_limit_is_accepted(tmp_path):
    d = tmp_path / "subs"
    write(d / "alice.ipynb", b"x" * 1000)
    write(d / "bob.ipynb", b"x" * 1001)
    subs = by_id(collect(d, assignment=A, max_notebook_bytes=1000))
    assert subs["alice"].notebook == b"x" * 1000
    assert subs["bob"].problem == "notebook is larger than 1000 bytes"


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_symlinks_in_a_folder(tmp_path):
    outside = tmp_path / "outside"
    write(outside / "secret.ipynb", nb("secret"))
    (outside / A).mkdir()
    write(outside / A / f"{A}.ipynb", nb("secret nbgrader"))
    d = tmp_path / "subs"
    write(d / "alice.ipynb", nb("alice"))
    write(d / "store" / "real.ipynb", nb("bob"))
    (d / "mallory.ipynb").symlink_to(outside / "secret.ipynb")
    (d / "bob.ipynb").symlink_to(Path("store") / "real.ipynb")  # stays inside: followed
    (d / "dangling.ipynb").symlink_to(d / "nowhere.ipynb")
    (d / "trudy").mkdir()
    (d / "trudy" / A).symlink_to(outside / A, target_is_directory=True)
    (d / "eve").symlink_to(outside, target_is_directory=True)
    subs = by_id(collect(d, assignment=A))
    assert subs["alice"].notebook == nb("alice")
    assert subs["bob"].notebook == nb("bob")
    expected = {"mallory": "the submissions folder", "eve": "the submissions folder", "trudy": "the student's folder"}
    for sid, where in expected.items():
        assert subs[sid].problem == f"symbolic link pointing outside {where}"
        assert subs[sid].notebook is None
    assert subs["dangling"].problem == "broken symbolic link"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    d = tmp_path / "subs"
    write(d / "alice.ipynb", nb("alice"))
    os.mkfifo(d / "pipe.ipynb")
    subs = by_id(collect(d, assignment=A))
    assert subs["pipe"].problem == "not a regular file"
    assert subs["alice"].problem is None


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_symlinks_in_a_student_folder_must_stay_in_it(tmp_path):
    sub = tmp_path / "submitted"
    write(sub / "bob" / A / f"{A}.ipynb", nb("bob"))
    (sub / "alice" / A).mkdir(parents=True)
    (sub / "alice" / A / f"{A}.ipynb").symlink_to(Path("..") / ".." / "bob" / A / f"{A}.ipynb")
    write(sub / "carol" / A / "drafts" / "v2.ipynb", nb("carol"))
    (sub / "carol" / A / f"{A}.ipynb").symlink_to(Path("drafts") / "v2.ipynb")
    subs = by_id(collect(tmp_path, assignment=A))
    assert subs["alice"].problem == "symbolic link pointing outside the student's folder"
    assert subs["bob"].notebook == nb("bob")
    assert subs["carol"].notebook == nb("carol")


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_course_root_with_submitted_as_a_link(tmp_path):
    exchange = tmp_path / "exchange" / "inbound"
    write(exchange / "alice" / A / f"{A}.ipynb", nb("alice"))
    course = tmp_path / "course"
    course.mkdir()
    (course / "submitted").symlink_to(exchange, target_is_directory=True)
    [sub] = collect(course, assignment=A)
    assert (sub.student_id, sub.notebook, sub.problem) == ("alice", nb("alice"), None)


def test_student_named_submitted(tmp_path):
    write(tmp_path / "submitted" / "submitted" / A / f"{A}.ipynb", nb("s"))
    write(tmp_path / "submitted" / "alice" / A / f"{A}.ipynb", nb("alice"))
    assert ids(collect(tmp_path / "submitted", assignment=A)) == ["alice", "submitted"]
    assert ids(collect(tmp_path, assignment=A)) == ["alice", "submitted"]


# --- nbgrader trees ---------------------------------------------------------------------


def make_course(root: Path) -> Path:
    sub = root / "submitted"
    write(sub / "alice" / A / f"{A}.ipynb", nb("alice"))
    write(sub / "alice" / A / ".ipynb_checkpoints" / f"{A}-checkpoint.ipynb", nb("checkpoint"))
    write(sub / "alice" / "other_lab" / "other_lab.ipynb", nb("other lab"))
    write(sub / "bob" / A / f"{A}.ipynb", nb("bob"))
    write(sub / "bob" / A / "timestamp.txt", b"2024-01-01")
    write(sub / "carol" / "other_lab" / "other_lab.ipynb", nb("carol, other lab only"))
    (sub / "dave" / A).mkdir(parents=True)
    write(sub / "erin" / A / "Untitled.ipynb", nb("erin"))
    # Other nbgrader folders in a course root must not look like students.
    write(root / "source" / A / f"{A}.ipynb", nb("source"))
    write(root / "release" / A / f"{A}.ipynb", nb("release"))
    return root


def check_course(subs: list[Submission]) -> None:
    assert ids(subs) == ["alice", "bob", "dave", "erin"]
    s = by_id(subs)
    assert s["alice"].notebook == nb("alice") and s["alice"].problem is None
    assert s["bob"].notebook == nb("bob") and s["bob"].problem is None
    assert s["dave"].problem == f"no {A}.ipynb in submission"
    assert s["erin"].problem == f"no {A}.ipynb in submission (found Untitled.ipynb)"
    assert s["dave"].notebook is None and s["erin"].notebook is None


def test_nbgrader_course_root_and_submitted_folder(tmp_path):
    root = make_course(tmp_path / "course")
    from_root = collect(root, assignment=A)
    check_course(from_root)
    assert from_root == collect(root / "submitted", assignment=A)
    assert by_id(from_root)["alice"].source == str(root / "submitted" / "alice" / A / f"{A}.ipynb")


def test_nbgrader_custom_notebook_name(tmp_path):
    write(tmp_path / "submitted" / "alice" / A / "lab.ipynb", nb("alice"))
    [sub] = collect(tmp_path, assignment=A, notebook_name="lab.ipynb")
    assert sub.notebook == nb("alice")


def test_nbgrader_tree_with_no_submissions_for_this_assignment(tmp_path):
    write(tmp_path / "submitted" / "carol" / "other_lab" / "other_lab.ipynb", nb("carol"))
    with pytest.raises(SubmissionsError, match="no submissions for assignment 'cnn_mnist'"):
        collect(tmp_path, assignment=A)


# --- Zip archives -----------------------------------------------------------------------


def test_zip_of_flat_notebooks(tmp_path):
    z = make_zip(tmp_path / "subs.zip", [("alice.ipynb", nb("alice")), ("bob.ipynb", nb("bob")), ("readme.txt", b"hi")])
    before = files_under(tmp_path)
    subs = collect(z, assignment=A)
    assert subs == [
        Submission("alice", nb("alice"), f"{z}:alice.ipynb"),
        Submission("bob", nb("bob"), f"{z}:bob.ipynb"),
    ]
    assert files_under(tmp_path) == before  # nothing was extracted


def test_zip_of_nbgrader_course(tmp_path):
    course = make_course(tmp_path / "course")
    members = [(p.relative_to(course).as_posix(), p.read_bytes()) for p in sorted(course.rglob("*")) if p.is_file()]
    members.append(("submitted/dave/cnn_mnist/", b""))  # explicit directory entry for the empty folder
    check_course(collect(make_zip(tmp_path / "course.zip", members), assignment=A))


def test_zip_of_student_folders_without_submitted(tmp_path):
    z = make_zip(
        tmp_path / "subs.zip",
        [
            (f"alice/{A}/{A}.ipynb", nb("alice")),
            (f"bob/{A}/{A}.ipynb", nb("bob")),
            (f"bob/{A}/data.csv", b"1,2"),
        ],
    )
    subs = collect(z, assignment=A)
    assert [(s.student_id, s.notebook) for s in subs] == [("alice", nb("alice")), ("bob", nb("bob"))]


def test_zip_of_a_single_student_folder_is_not_taken_for_a_wrapper(tmp_path):
    z = make_zip(tmp_path / "alice.zip", [(f"alice/{A}/{A}.ipynb", nb("alice"))])
    [sub] = collect(z, assignment=A)
    assert (sub.student_id, sub.notebook) == ("alice", nb("alice"))


def test_zip_with_wrapper_folder_and_macos_litter(tmp_path):
    z = make_zip(
        tmp_path / "lms.zip",
        [
            ("export/", b""),
            ("export/alice.ipynb", nb("alice")),
            ("export/bob.ipynb", nb("bob")),
            ("export/.DS_Store", b"\0"),
            ("__MACOSX/export/._alice.ipynb", b"resource fork"),
        ],
    )
    subs = collect(z, assignment=A)
    assert [(s.student_id, s.notebook, s.source) for s in subs] == [
        ("alice", nb("alice"), f"{z}:export/alice.ipynb"),
        ("bob", nb("bob"), f"{z}:export/bob.ipynb"),
    ]


def test_zip_with_wrapper_around_nbgrader_course(tmp_path):
    z = make_zip(
        tmp_path / "course.zip",
        [
            (f"course/submitted/alice/{A}/{A}.ipynb", nb("alice")),
            (f"course/source/{A}/{A}.ipynb", nb("source")),
        ],
    )
    assert ids(collect(z, assignment=A)) == ["alice"]


def test_zip_with_windows_separators(tmp_path):
    z = make_zip(tmp_path / "win.zip", [(f"alice\\{A}\\{A}.ipynb", nb("alice"))])
    [sub] = collect(z, assignment=A)
    assert (sub.student_id, sub.notebook) == ("alice", nb("alice"))


def test_zip_with_japanese_names_with_and_without_utf8_flag(tmp_path):
    flagged = make_zip(tmp_path / "flagged.zip", [("山田太郎.ipynb", nb("yamada"))])
    unflagged = tmp_path / "unflagged.zip"
    unflagged.write_bytes(patch_flags(flagged.read_bytes(), clear_bits=0x800))
    for z in (flagged, unflagged):
        [sub] = collect(z, assignment=A)
        assert (sub.student_id, sub.notebook, sub.problem) == ("山田太郎", nb("yamada"), None)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil.ipynb", "'..' in path"),
        ("sub/../../evil.ipynb", "'..' in path"),
        ("..\\evil.ipynb", "'..' in path"),
        ("/etc/evil.ipynb", "absolute path"),
        ("//server/share/evil.ipynb", "absolute path"),
        ("\\evil.ipynb", "absolute path"),
        ("C:/evil.ipynb", "drive letter"),
        ("C:evil.ipynb", "drive letter"),
        ("c:\\evil.ipynb", "drive letter"),
    ],
)
def test_zip_member_with_unsafe_path(tmp_path, name, reason):
    z = make_zip(tmp_path / "subs.zip", [("alice.ipynb", nb("alice")), (name, nb("evil"))])
    before = files_under(tmp_path)
    subs = collect(z, assignment=A)
    assert len(subs) == 2
    [good] = [s for s in subs if s.problem is None]
    [bad] = [s for s in subs if s.problem is not None]
    assert good == Submission("alice", nb("alice"), f"{z}:alice.ipynb")
    assert bad.notebook is None
    assert bad.problem == f"unsafe path in archive ({reason})"
    assert bad.source.endswith(":" + name.replace("\\", "/"))
    assert files_under(tmp_path) == before


def test_zip_unsafe_non_notebook_member_is_only_logged(tmp_path, caplog):
    z = make_zip(tmp_path / "subs.zip", [("alice.ipynb", nb("alice")), ("../../etc/passwd", b"root:x:0:0")])
    with caplog.at_level(logging.WARNING, logger="autograder.submissions"):
        assert ids(collect(z, assignment=A)) == ["alice"]
    assert "unsafe path" in caplog.text


def test_zip_symlink_member(tmp_path):
    link = zipfile.ZipInfo("mallory.ipynb")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = make_zip(tmp_path / "subs.zip", [("alice.ipynb", nb("alice")), (link, b"/home/ta/.ssh/id_rsa")])
    subs = by_id(collect(z, assignment=A))
    assert subs["mallory"] == Submission("mallory", None, f"{z}:mallory.ipynb", "symbolic link in archive")
    assert subs["alice"].problem is None


def test_zip_bomb_is_stopped_at_the_per_notebook_cap(tmp_path):
    bomb = b"\0" * (4 * MB)
    z = make_zip(tmp_path / "bomb.zip", [("alice.ipynb", nb("alice")), ("bomb.ipynb", bomb)])
    assert z.stat().st_size < 50_000  # it really is highly compressible
    subs = by_id(collect(z, assignment=A, max_notebook_bytes=MB))
    assert subs["bomb"] == Submission("bomb", None, f"{z}:bomb.ipynb", "notebook is larger than 1 MB")
    assert subs["alice"].notebook == nb("alice")


def test_zip_header_sizes_are_not_trusted(tmp_path):
    z = make_zip(tmp_path / "liar.zip", [("liar.ipynb", b"\0" * (4 * MB))])
    with zipfile.ZipFile(z) as zf:
        true_size = zf.getinfo("liar.ipynb").file_size
    data = bytearray(z.read_bytes())
    # Make both headers claim the member expands to 100 bytes.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(signature)
        assert int.from_bytes(data[i + offset : i + offset + 4], "little") == true_size
        data[i + offset : i + offset + 4] = (100).to_bytes(4, "little")
    z.write_bytes(bytes(data))
    [sub] = collect(z, assignment=A, max_notebook_bytes=MB)
    assert sub.notebook is None
    assert sub.problem.startswith(("corrupt archive member", "notebook is larger than"))


def test_zip_total_size_cap(tmp_path):
    members = [(f"s{i}.ipynb", b"a" * 600_000) for i in range(3)]
    z = make_zip(tmp_path / "many.zip", members)
    assert len(collect(z, assignment=A, max_notebook_bytes=MB, max_total_bytes=2 * MB)) == 3
    with pytest.raises(SubmissionsError, match="max_total_bytes") as e:
        collect(z, assignment=A, max_notebook_bytes=MB, max_total_bytes=MB)
    assert str(z) in str(e.value)


def test_zip_encrypted_member(tmp_path):
    plain = make_zip(tmp_path / "plain.zip", [("alice.ipynb", nb("alice"))])
    z = tmp_path / "locked.zip"
    z.write_bytes(patch_flags(plain.read_bytes(), set_bits=0x1))
    with zipfile.ZipFile(z) as zf:
        assert zf.getinfo("alice.ipynb").flag_bits & 0x1  # the handcrafted flag is really there
    [sub] = collect(z, assignment=A)
    assert sub == Submission("alice", None, f"{z}:alice.ipynb", "encrypted archive member")


def test_zip_corrupt_member(tmp_path):
    marker = b'{"cells": [], "marker": "CORRUPT ME"}'
    z = make_zip(tmp_path / "subs.zip", [("alice.ipynb", nb("alice")), ("bob.ipynb", marker)], zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    i = data.index(b"CORRUPT ME")
    data[i] ^= 0xFF
    z.write_bytes(bytes(data))
    subs = by_id(collect(z, assignment=A))
    assert subs["alice"].notebook == nb("alice")
    assert subs["bob"].notebook is None
    assert subs["bob"].problem.startswith("corrupt archive member")


def test_zip_with_invalid_id_member(tmp_path):
    z = make_zip(tmp_path / "subs.zip", [("alice.ipynb", nb("alice")), ("ev\x01l.ipynb", nb("evil"))])
    subs = by_id(collect(z, assignment=A))
    assert subs["ev\\x01l"].problem == "invalid student id: contains control character U+0001"


# --- Duplicates -------------------------------------------------------------------------


def test_duplicate_flat_and_nbgrader_in_one_folder(tmp_path):
    d = tmp_path / "subs"
    flat = write(d / "alice.ipynb", nb("flat"))
    tree = write(d / "alice" / A / f"{A}.ipynb", nb("tree"))
    write(d / "bob.ipynb", nb("bob"))
    subs = collect(d, assignment=A)
    assert ids(subs) == ["alice", "alice", "bob"]
    dups = {s.source: s for s in subs if s.student_id == "alice"}
    assert dups[str(flat)].problem == f"duplicate student id: also in {tree}"
    assert dups[str(tree)].problem == f"duplicate student id: also in {flat}"
    assert all(s.notebook is None for s in dups.values())
    assert subs[2].problem is None


def test_duplicate_member_names_in_zip(tmp_path):
    z = make_zip(tmp_path / "subs.zip", [("alice.ipynb", nb("one")), ("alice.ipynb", nb("two"))])
    subs = collect(z, assignment=A)
    assert ids(subs) == ["alice", "alice"]
    assert all(s.problem == f"duplicate student id: also in {z}:alice.ipynb" and s.notebook is None for s in subs)


def test_duplicates_differing_only_by_case_or_normalisation(tmp_path):
    z = make_zip(
        tmp_path / "subs.zip",
        [
            ("Alice.ipynb", nb("upper")),
            ("alice.ipynb", nb("lower")),
            ("Jos\u00e9.ipynb", nb("nfc")),
            ("Jose\u0301.ipynb", nb("nfd")),
            ("bob.ipynb", nb("bob")),
        ],
    )
    subs = collect(z, assignment=A)
    assert ids(subs) == ["Alice", "Jos\u00e9", "Jos\u00e9", "alice", "bob"]
    for s in subs[:4]:
        assert s.problem.startswith("duplicate student id: also in ") and s.notebook is None
    assert subs[0].problem == f"duplicate student id: also in {z}:alice.ipynb"
    assert subs[4].problem is None


# --- Wholly unusable inputs -------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(SubmissionsError, match="does not exist") as e:
        collect(tmp_path / "nope", assignment=A)
    assert str(tmp_path / "nope") in str(e.value) and ".zip" in str(e.value)


def test_not_a_zip(tmp_path):
    f = write(tmp_path / "grades.csv", b"id,score\n")
    with pytest.raises(SubmissionsError, match="not a folder or a readable zip archive") as e:
        collect(f, assignment=A)
    assert str(f) in str(e.value)


def test_truncated_zip(tmp_path):
    z = make_zip(tmp_path / "subs.zip", [(f"s{i}.ipynb", nb(str(i))) for i in range(5)])
    z.write_bytes(z.read_bytes()[:200])
    with pytest.raises(SubmissionsError, match="readable zip archive"):
        collect(z, assignment=A)


def test_single_notebook_is_not_a_batch(tmp_path):
    f = write(tmp_path / "alice.ipynb", nb("alice"))
    with pytest.raises(SubmissionsError, match="single notebook"):
        collect(f, assignment=A)


@pytest.mark.parametrize("content", [[], [("readme.txt", b"hi")]])
def test_empty_folder(tmp_path, content):
    d = tmp_path / "subs"
    d.mkdir()
    for name, data in content:
        write(d / name, data)
    with pytest.raises(SubmissionsError, match="no submissions for assignment 'cnn_mnist'") as e:
        collect(d, assignment=A)
    assert str(d) in str(e.value) and f"submitted/<student_id>/{A}/{A}.ipynb" in str(e.value)


def test_empty_zip(tmp_path):
    z = make_zip(tmp_path / "empty.zip", [])
    with pytest.raises(SubmissionsError, match="no submissions"):
        collect(z, assignment=A)


def test_error_is_a_value_error():
    assert issubclass(SubmissionsError, ValueError)


# --- validate_student_id ----------------------------------------------------------------


PERSIAN_WITH_ZWNJ = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"


@pytest.mark.parametrize(
    "sid", ["alice", "Jane Doe", "山田太郎", "$(rm -rf ~)", "a;b|c", "-rf", "x" * 128, "Jos\u00e9", PERSIAN_WITH_ZWNJ]
)
def test_valid_ids(sid):
    assert validate_student_id(sid) is None


@pytest.mark.parametrize(
    "sid, reason",
    [
        ("", "empty"),
        (".", "'.' is not a name"),
        ("..", "'..' is not a name"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("a\x00b", "control character U+0000"),
        ("a\nb", "control character U+000A"),
        ("a\u2028b", "control character U+2028"),
        (" alice", "leading or trailing whitespace"),
        ("alice\u3000", "leading or trailing whitespace"),
        ("   ", "leading or trailing whitespace"),
        ("x" * 129, "longer than 128 characters"),
        ("\u202eevil", "invisible formatting character U+202E"),
        ("al\u200bice", "invisible formatting character U+200B"),
        ("caf\udce9", "not valid text"),
    ],
)
def test_invalid_ids(sid, reason):
    got = validate_student_id(sid)
    assert got is not None and reason in got
