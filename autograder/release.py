"""Release: the source notebook becomes the student notebook (nbgrader's own generate_assignment) and the
executed answer key.

Both outputs are committed, so the step is idempotent: the student notebook is regenerated and written only
when its bytes change, and the answer key is re-executed only when the source notebook it was made from
changes (its metadata records the source's sha256; outputs of a training run are not byte-stable).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .files import write_atomic
from .config import Assignment, claim
from .course import Course
from .notebook import grade_cells, read_notebook, strip_markers

log = logging.getLogger(__name__)


class ReleaseError(RuntimeError):
    """The source notebook cannot be released; the message says what to fix."""


@dataclass(frozen=True)
class Outcome:
    path: Path
    changed: bool  # written now (or, with check, stale)


def source_digest(assignment: Assignment) -> str:
    return hashlib.sha256(assignment.source_notebook.read_bytes()).hexdigest()


def check_source(assignment: Assignment) -> None:
    """The notebook and the config must agree on cells and points before anything is released."""
    nb = read_notebook(assignment.source_notebook)
    cells = grade_cells(nb)
    problems = [f"{key} cell {cid!r} (assignment.toml {key}) is not in the notebook"
                for key in ("module_cells", "experiment_cells") for cid in getattr(assignment, key) if cid not in cells]
    # The notebook must tell students what grading does: each claim, with the config's values, in its cell.
    for cid, texts in assignment.claims.items():
        source = cells[cid].source if cid in cells else None
        if source is None:
            problems.append(f"claims name the cell {cid!r}, which is not in the notebook")
            continue
        problems += [f"the cell {cid!r} does not say {claim(text, assignment)!r} (assignment.toml [claims]): "
                     "the notebook and the config disagree" for text in texts if claim(text, assignment) not in source]
    for part, points in assignment.points.items():
        cell = cells.get(f"test_{part}")
        if cell is None:
            problems.append(f"part {part!r} has no grade cell 'test_{part}' in the notebook")
        elif float(cell.metadata["nbgrader"].get("points", 0)) != points:
            problems.append(f"grade cell 'test_{part}' has {cell.metadata['nbgrader'].get('points')} points in the "
                            f"notebook but {points:g} in assignment.toml")
    if problems:
        raise ReleaseError(f"{assignment.source_notebook}: " + "; ".join(problems))


def student_notebook(assignment: Assignment) -> str:
    """Run nbgrader's generate_assignment on the source in a scratch course; return the notebook's text."""
    from nbgrader.apps import NbGraderAPI  # imported here: pulls in jupyter's server stack
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="autograder-release-") as tmp:
        course = Path(tmp)
        source = course / "source" / assignment.name
        source.mkdir(parents=True)
        shutil.copy(assignment.source_notebook, source / assignment.notebook)
        config = Config()
        config.CourseDirectory.root = str(course)
        config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
        (course / "exchange").mkdir()  # nbgrader insists on a writable exchange even though nothing uses it
        config.Exchange.root = str(course / "exchange")
        config.NbGraderAPI.log_level = log.getEffectiveLevel()  # quiet unless -v
        api = NbGraderAPI(config=config)
        with _venv_on_path():
            result = api.generate_assignment(assignment.name, force=True, create=True)
        if not result["success"]:
            raise ReleaseError(f"nbgrader generate_assignment failed for {assignment.source_notebook}:\n"
                               f"{result.get('error') or result.get('log')}")
        released = course / "release" / assignment.name / assignment.notebook
        # Re-serialise so the committed file has one canonical form whatever nbgrader's writer did.
        return nbformat.writes(nbformat.read(released, as_version=4)) + "\n"


def answer_key(assignment: Assignment, *, digest: str) -> nbformat.NotebookNode:
    """The source notebook with solution markers removed, executed top to bottom on MNIST."""
    from nbclient import NotebookClient

    nb = read_notebook(assignment.source_notebook)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_markers(cell.source)
    with tempfile.TemporaryDirectory(prefix="autograder-key-") as cwd:
        client = NotebookClient(nb, timeout=1800, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": cwd}})
        client.execute()
    nb.metadata["autograder"] = {"source_sha256": digest}
    return nb


def run(assignment: Assignment, course: Course, *, check: bool = False) -> list[Outcome]:
    """Bring the course's release/ and solutions/ up to date with the lab's source (or, with check, only
    report what is stale)."""
    release_dir, solutions_dir = course.release_dir, course.solutions_dir
    check_source(assignment)
    outcomes = []

    target = Path(release_dir) / assignment.name / assignment.notebook
    text = student_notebook(assignment)
    stale = not target.is_file() or target.read_text(encoding="utf-8") != text
    if stale and not check:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text)
    outcomes.append(Outcome(target, stale))

    key = Path(solutions_dir) / assignment.name / assignment.notebook
    digest = source_digest(assignment)
    recorded = None
    if key.is_file():
        recorded = nbformat.read(key, as_version=4).metadata.get("autograder", {}).get("source_sha256")
    stale = recorded != digest
    if stale and not check:
        log.info("executing the answer key %s (this trains the network)", key)
        key.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(key, nbformat.writes(answer_key(assignment, digest=digest)) + "\n")
    outcomes.append(Outcome(key, stale))
    return outcomes


@contextlib.contextmanager
def _venv_on_path():
    """nbgrader runs `alembic` from PATH: make it work from an un-activated virtual environment too."""
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + saved
    try:
        yield
    finally:
        os.environ["PATH"] = saved


