"""The per-assignment config (``assignments/<name>/assignment.toml``), read into frozen dataclasses.

Unknown keys and wrong types are errors that name the key: a typo in a threshold must not silently grade a
whole class with the default.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .sandbox import Limits  # the sandbox's own limits type: [limits] maps onto it field by field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "assignment.toml"


class ConfigError(ValueError):
    """The assignment config is missing or wrong; the message names the file and the key."""


@dataclass(frozen=True)
class Training:
    """The budget under which the grader trains each student's model."""

    epochs: int = 1  # passes over the training images
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    seed: int = 0  # seeds Python, NumPy and torch before construction and training
    holdout: int = 10_000  # training images kept out of training, to check the student's evaluate()


@dataclass(frozen=True)
class Accuracy:
    """How test accuracy of the trained weights turns into points."""

    threshold: float = 0.94  # full points at or above
    floor: float = 0.5  # no points at or below; linear in between
    margin: float = 0.0  # within this below threshold, retrain with a second seed before taking points
    calibration: str = ""  # the calibration run this threshold came from


@dataclass(frozen=True)
class Harness:
    """Time limits inside a run, below the sandbox's wall time: one hung call costs its part, not the run."""

    cell_seconds: float = 60.0  # executing one graded cell; the cells a student added share this much between them
    call_seconds: float = 10.0  # one call of a student function on a probe; evaluate() gets 4 times this
    train_seconds: float = 240.0  # the whole training run under the budget


@dataclass(frozen=True)
class Judge:
    """The grading process's own limit per submission: whatever a run sends back, judging it ends in time."""

    seconds: float = 120.0  # the hidden checks and the replay of the loop, together; past it: status "limit"


@dataclass(frozen=True)
class Late:
    """When the lab is due and what a late submission costs, with nbgrader's semantics (late.py applies it).

    Kept out of the results' fingerprint: moving the due date or the policy re-scores a class without
    training anyone again."""

    due: str = ""  # ISO 8601 with its UTC offset, "2026-12-07T23:59:00+09:00"; "": no due date
    # "none": lateness is recorded and shown, no points off (nbgrader's default); "zero": a late submission
    # scores 0 (nbgrader's other built-in); "per_hour" / "per_day": `points` off per started hour / day late
    penalty: str = "none"
    points: float = 0.0  # points off per started hour or day (per_hour, per_day)
    cap: float = float("inf")  # at most this many points off in all (per_hour, per_day)
    grace_minutes: float = 0.0  # submissions this long after `due` still count as on time


@dataclass(frozen=True)
class Cluster:
    """The course's [cluster] table (course.toml): the Slurm jobs that `autograder grade --cluster slurm` starts
    through dask-jobqueue, each running Dask worker processes that grade as a local batch does."""

    queue: str = ""  # the Slurm partition (sbatch -p); "": the cluster's default
    account: str = ""  # sbatch -A; "": none
    jobs: int = 1  # Slurm jobs at most, started as the batch begins and cancelled when it ends
    cores: int = 2  # CPU cores per job
    # Dask worker processes per job; 0: one per core. Each has its own judge and fork server, and grades one
    # submission at a time: the judge of one process is single-threaded, so a slot per process scales best.
    processes: int = 0
    memory: str = "8GB"  # per job; a sandbox's own limit comes from the lab's [limits]
    walltime: str = "01:00:00"  # per job: a job that ends mid-submission has that submission graded elsewhere
    gpus: int = 0  # per job (--gres=gpu:N), for --device cuda
    # Shell lines run in each job before its worker starts: `module load ...`, `source /path/venv/bin/activate`,
    # `export MNIST_DIR=/shared/mnist`. The job also inherits the environment `autograder grade` ran in.
    prologue: tuple[str, ...] = ()
    directives: tuple[str, ...] = ()  # more #SBATCH lines, e.g. "--constraint=avx2", "--qos=short"
    python: str = ""  # the workers' interpreter; "": the one running `autograder grade` (a shared install)
    interface: str = ""  # the network interface the scheduler listens on, as the workers reach it (ib0, eth0)
    host: str = ""  # or the address it listens on ("127.0.0.1" for a one-node cluster)
    wait_seconds: float = 0.0  # fail when no worker could grade after this long; 0: wait for the queue


@dataclass(frozen=True)
class PartName:
    """A part's name in the reports, per language. Optional: a part without one is shown by its id."""

    ja: str = ""
    en: str = ""


@dataclass(frozen=True)
class Assignment:
    name: str
    notebook: str  # file name of the source notebook in the assignment folder
    module_cells: tuple[str, ...]  # grade_ids of the graded cells: the answer key's module, in notebook order
    # The network class the answer key defines: what the grader builds, trains from, replays and measures. The
    # lab's one definition of its network; its runtime's copy inside the sandbox is tested against it.
    model: str
    experiment_cells: tuple[str, ...] = ()  # grade_ids of cells the grader never runs (training on MNIST)
    # Python modules the lab's runtime.py imports inside the sandbox (e.g. labkit.steps): their source travels
    # with the plan, since the sandbox sees no site-packages of ours.
    runtime_modules: tuple[str, ...] = ()
    dataset: str = "mnist"  # the data the lab trains and is measured on: a provider of autograder.datasets
    # cell grade_id -> texts that cell must contain, with this config's values filled in ("{training.epochs}"):
    # what the notebook tells students about grading. `release --check` fails when they drift apart.
    claims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    points: dict[str, float] = field(default_factory=dict)  # part -> points; grade cell "test_<part>"
    check_points: dict[str, float] = field(default_factory=dict)  # "part.check" -> fixed points within its part
    part_names: dict[str, PartName] = field(default_factory=dict)  # part -> its name in the reports (optional)
    training: Training = Training()
    accuracy: Accuracy = Accuracy()
    limits: Limits = Limits()
    harness: Harness = Harness()
    judge: Judge = Judge()
    late: Late = Late()
    folder: Path = Path(".")

    @property
    def total_points(self) -> float:
        return float(sum(self.points.values()))

    @property
    def source_notebook(self) -> Path:
        return self.folder / self.notebook

    @property
    def runtime(self) -> Path:
        """The lab's part of a run, inside the sandbox (no secrets: harness.load_lab loads it there)."""
        return self.folder / "runtime.py"


def _check_type(value, annotation, where: str):
    origin = typing.get_origin(annotation)
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _wrong(where, "a number", value)
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else _wrong(where, "an integer", value)
    if annotation is str:
        return value if isinstance(value, str) else _wrong(where, "a string", value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            _wrong(where, "a list of strings", value)
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            _wrong(where, "a table", value)
        kind = typing.get_args(annotation)[1]
        if dataclasses.is_dataclass(kind):  # a table of tables, e.g. [part_names]: each one checked as a dataclass
            return {k: _build(kind, v, f"{where}.{k}") for k, v in value.items()}
        return {k: _check_type(v, kind, f"{where}.{k}") for k, v in value.items()}
    raise AssertionError(f"unsupported annotation {annotation}")


def _wrong(where: str, expected: str, value):
    raise ConfigError(f"{where} must be {expected}, not {value!r}")


def _build(cls, table: dict, where: str):
    if not isinstance(table, dict):
        _wrong(where, "a table", table)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "folder"}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in [{where}]; "
                          f"known keys: {', '.join(fields)}")
    values = {}
    for name, value in table.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{where}.{name}" if where else name)
        else:
            values[name] = _check_type(value, hint, f"{where}.{name}" if where else name)
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)} in [{where or 'top level'}]")
    return cls(**values)


def cluster(table: dict, where: str) -> Cluster:
    """The [cluster] table of course.toml, checked key by key like an assignment's config."""
    try:
        settings = _build(Cluster, table, "cluster")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if settings.jobs < 1 or settings.cores < 1 or settings.processes < 0 or settings.gpus < 0:
        raise ConfigError(f"{where}: [cluster] jobs and cores must be at least 1, processes and gpus at least 0")
    return settings


def load(path: Path) -> Assignment:
    """Read one assignment.toml (or the folder that holds it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_NAME
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no assignment config at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        assignment = _build(Assignment, table, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    problems = _validate(assignment)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return dataclasses.replace(assignment, folder=path.parent)


def _validate(a: Assignment) -> list[str]:
    problems = []
    if not a.points:
        problems.append("[points] must list at least one part")
    problems += [f"points.{k} must not be negative" for k, v in a.points.items() if v < 0]
    for key, value in a.check_points.items():
        part = key.split(".")[0]
        if part not in a.points or "." not in key:
            problems.append(f"check_points.{key} must be named 'part.check' with a part of [points]")
        elif not 0 <= value <= a.points[part]:
            problems.append(f"check_points.{key} must be between 0 and the part's {a.points[part]:g} points")
    problems += [f"part_names.{k} must name a part of [points]" for k in a.part_names if k not in a.points]
    for part in a.points:
        fixed = sum(v for k, v in a.check_points.items() if k.split(".")[0] == part)
        if fixed > a.points[part]:
            problems.append(f"check_points of part {part} add up to more than its {a.points[part]:g} points")
    if a.training.optimizer not in ("sgd", "adam"):
        problems.append(f"training.optimizer must be 'sgd' or 'adam', not {a.training.optimizer!r}")
    for name in ("epochs", "batch_size"):
        if getattr(a.training, name) < 1:
            problems.append(f"training.{name} must be at least 1")
    from . import datasets

    if a.dataset not in datasets.PROVIDERS:
        problems.append(f"dataset must be one of {', '.join(datasets.PROVIDERS)}, not {a.dataset!r}")
    elif not 0 <= a.training.holdout < datasets.PROVIDERS[a.dataset].TRAIN_COUNT:
        problems.append(f"training.holdout must be between 0 and {datasets.PROVIDERS[a.dataset].TRAIN_COUNT - 1}")
    if not a.model.isidentifier():
        problems.append(f"model must be the name of the answer key's network class, not {a.model!r}")
    for name in a.runtime_modules:
        if not all(part.isidentifier() for part in name.split(".")):
            problems.append(f"runtime_modules: {name!r} is not a module name")
    if not 0 <= a.accuracy.floor < a.accuracy.threshold <= 1:
        problems.append("accuracy needs 0 <= floor < threshold <= 1")
    if a.accuracy.margin < 0:
        problems.append("accuracy.margin must not be negative")
    for name in ("cell_seconds", "call_seconds", "train_seconds"):
        if getattr(a.harness, name) <= 0:
            problems.append(f"harness.{name} must be positive")
    if a.judge.seconds <= 0:
        problems.append("judge.seconds must be positive")
    problems += _late_problems(a.late)
    problems += [f"experiment_cells: {gid!r} is also one of module_cells" for gid in a.experiment_cells
                 if gid in a.module_cells]
    for gid, texts in a.claims.items():
        for text in texts:
            try:
                claim(text, a)
            except (AttributeError, KeyError, IndexError, ValueError) as exc:
                problems.append(f"claims.{gid}: {text!r} cannot be filled in from this config ({exc!r})")
    for name in ("wall_seconds", "memory_mb", "processes", "output_bytes", "scratch_mb"):
        if getattr(a.limits, name) <= 0:
            problems.append(f"limits.{name} must be positive")
    return problems


LATE_PENALTIES = ("none", "zero", "per_hour", "per_day")


def due_date(late: Late):
    """[late].due as an aware datetime, or None when the lab has no due date. Raises ValueError."""
    from datetime import datetime

    if not late.due:
        return None
    due = datetime.fromisoformat(late.due)
    if due.tzinfo is None:
        raise ValueError("it has no UTC offset (write it as 2026-12-07T23:59:00+09:00)")
    return due


def _late_problems(late: Late) -> list[str]:
    problems = []
    try:
        due_date(late)
    except ValueError as exc:
        problems.append(f"late.due {late.due!r} is not a date and time with its UTC offset: {exc}")
    if late.penalty not in LATE_PENALTIES:
        problems.append(f"late.penalty must be one of {', '.join(LATE_PENALTIES)}, not {late.penalty!r}")
    if late.penalty != "none" and not late.due:
        problems.append(f"late.penalty = {late.penalty!r} needs late.due")
    for name in ("points", "cap", "grace_minutes"):
        if getattr(late, name) < 0:
            problems.append(f"late.{name} must not be negative")
    if late.penalty in ("per_hour", "per_day") and late.points == 0:
        problems.append(f"late.penalty = {late.penalty!r} needs late.points, the points off per started "
                        f"{late.penalty[4:]}")
    return problems


def claim(text: str, a: Assignment) -> str:
    """A claim of [claims] with the config's values in it: "EPOCHS = {training.epochs}" -> "EPOCHS = 1"."""
    return text.format(training=a.training, accuracy=a.accuracy, harness=a.harness, limits=a.limits,
                       points=a.points)


def find(name: str, *, root: Path) -> Assignment:
    """Load the assignment called `name` from the labs folder `root` (course.py), or from a folder path, with
    a message that lists the choices."""
    if (Path(name) / CONFIG_NAME).is_file() and (os.sep in name or name.startswith(".")):
        return load(Path(name))  # a course kept elsewhere, or a copy with other limits
    folder = Path(root) / name
    if not (folder / CONFIG_NAME).is_file():
        known = sorted(p.parent.name for p in Path(root).glob(f"*/{CONFIG_NAME}"))
        raise ConfigError(f"no assignment {name!r} in {root} (known: {', '.join(known) or 'none'})")
    return load(folder)


def runtime_sources(assignment: Assignment) -> dict:
    """The lab's runtime.py and the modules its config lists, as source: what harness.load_lab loads. Each
    listed module comes after the modules of its own package that it imports (labkit.steps brings
    labkit.records), so that the sandbox, which sees none of the kit's files, can load them in this order."""
    modules: dict[str, str] = {}
    loading: set[str] = set()

    def add(name: str, needed_by: str | None) -> None:
        if name in modules or name in loading:
            return
        path = _module_file(name)
        if path is None:
            where = f"imported by {needed_by}" if needed_by else "runtime_modules"
            raise ConfigError(f"{where}: {name} is not a Python module this kit can find")
        loading.add(name)
        source = path.read_text(encoding="utf-8")
        for dependency in _package_imports(source, name):
            add(dependency, name)
        modules[name] = source

    for name in assignment.runtime_modules:
        add(name, None)
    return {"runtime": assignment.runtime.read_text(encoding="utf-8"), "modules": modules}


def _package_imports(source: str, name: str) -> list[str]:
    """The modules of `name`'s own top-level package that its source imports (absolute imports only)."""
    top, found = name.split(".")[0], []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return [n for n in found if n.split(".")[0] == top and n not in (top, name)]


def _module_file(name: str) -> Path | None:
    """The source file of module `name`, found as `import` would find it (sys.meta_path: an editable install's
    finder too) but without importing it, and without sys.modules, where a test may have loaded a lab's copy."""
    locations, spec = None, None
    for depth in range(1, name.count(".") + 2):
        part = ".".join(name.split(".")[:depth])
        spec = next((found for finder in sys.meta_path if hasattr(finder, "find_spec")
                     for found in [finder.find_spec(part, locations)] if found is not None), None)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
    origin = spec.origin if spec.has_location else None
    return Path(origin) if origin and origin.endswith(".py") else None
