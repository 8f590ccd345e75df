"""A course is a folder, as with nbgrader: the labs' sources, their student release, their answer keys, and
whatever grading writes. The current directory by default (`--course DIR` names another): the kit itself
refers to no checkout, so an installed kit grades any instructor's course.

    <course>/
      course.toml          optional: other names for the three folders below (keys source, release, solutions),
                           and [cluster], the Slurm jobs of `autograder grade --cluster slurm` (config.Cluster)
      assignments/<lab>/   one folder per lab: assignment.toml, the source notebook, hidden/ (config.py)
      release/<lab>/       the student notebook, written by `autograder release`
      solutions/<lab>/     the executed answer key, written by `autograder release`
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import config
from .config import Assignment, ConfigError, tomllib

COURSE_FILE = "course.toml"


@dataclass(frozen=True)
class Course:
    root: Path
    source: str = "assignments"  # nbgrader's "source" folder: one folder per lab
    release: str = "release"
    solutions: str = "solutions"
    cluster: config.Cluster = field(default_factory=config.Cluster)

    @classmethod
    def at(cls, root: Path | str | None = None) -> Course:
        """The course in `root` (default: the current directory), with its course.toml if it has one."""
        root = Path(root or ".").resolve()
        if not root.is_dir():
            raise ConfigError(f"the course folder {root} does not exist")
        names = {}
        if (root / COURSE_FILE).is_file():
            try:
                names = tomllib.loads((root / COURSE_FILE).read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{root / COURSE_FILE}: {exc}") from None
            if "cluster" in names:
                names["cluster"] = config.cluster(names["cluster"], str(root / COURSE_FILE))
            known = {f.name for f in fields(cls)} - {"root", "cluster"}
            wrong = [k for k, v in names.items() if k != "cluster" and (k not in known or not isinstance(v, str) or not v)]
            if wrong:
                raise ConfigError(f"{root / COURSE_FILE}: unknown or empty keys {', '.join(wrong)} "
                                  f"(known: {', '.join(sorted(known))}, each a folder name)")
        return cls(root, **names)

    @property
    def labs_dir(self) -> Path:
        return self.root / self.source

    @property
    def release_dir(self) -> Path:
        return self.root / self.release

    @property
    def solutions_dir(self) -> Path:
        return self.root / self.solutions

    def labs(self) -> list[str]:
        return sorted(p.parent.name for p in self.labs_dir.glob(f"*/{config.CONFIG_NAME}"))

    def lab(self, name: str | None = None) -> Assignment:
        """The lab called `name` (or a lab folder's path); without a name, the course's only lab."""
        if name is None:
            labs = self.labs()
            if len(labs) != 1:
                raise ConfigError(f"name a lab with --assignment: {self.labs_dir} holds "
                                  f"{', '.join(labs) if labs else 'none'}"
                                  + ("" if labs else f" (is {self.root} a course folder? see --course)"))
            name = labs[0]
        return config.find(name, root=self.labs_dir)

    def lab_of(self, notebook: bytes, name: str | None = None) -> Assignment:
        """The lab a student's notebook belongs to: `name` when given; else the course's only lab; else the
        one lab whose graded cells (nbgrader grade_ids) the notebook holds all of. A notebook that matches no
        lab, or more than one, asks for --assignment."""
        from .notebook import grade_id  # nbformat: imported only when a notebook is read

        labs = self.labs()
        if name is not None or len(labs) <= 1:
            return self.lab(name)
        try:
            cells = json.loads(notebook).get("cells", [])
            ids = {grade_id(c) for c in cells if isinstance(c, dict)}
        except (ValueError, AttributeError, TypeError):
            ids = set()
        found = [lab for lab in map(self.lab, labs) if set(lab.module_cells) <= ids]
        if len(found) != 1:
            raise ConfigError(f"name a lab with --assignment: the notebook's cells do not say which of "
                              f"{', '.join(labs)} it belongs to")
        return found[0]
