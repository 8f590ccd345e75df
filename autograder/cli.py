"""The ``autograder`` command: a thin layer of argparse over the step modules."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from . import config
from .course import Course


def _release(args) -> int:
    from . import release

    course = Course.at(args.course)
    # Without a name, every lab of the course: `release --check` is then one check for the whole course.
    names = course.labs()  # none: course.lab() says that this is not a course folder
    labs = [course.lab(args.assignment)] if args.assignment or not names else [course.lab(n) for n in names]
    stale = []
    for assignment in labs:
        outcomes = release.run(assignment, course, check=args.check)
        changed = [o.path for o in outcomes if o.changed]
        stale += changed
        if args.check:
            for path in changed:
                print(f"stale: {path} (run 'autograder release {assignment.name}' and commit the result)")
            if not changed:
                print(f"release and answer key of {assignment.name} are up to date")
        else:
            for outcome in outcomes:
                print(f"{'wrote' if outcome.changed else 'unchanged'}: {outcome.path}")
    return 1 if args.check and stale else 0


def _grade(args) -> int:
    from . import grade, intake

    course = Course.at(args.course)
    assignment = course.lab(args.assignment)
    # On a cluster each worker checks CUDA for itself (slot.refusal); "auto" grades on the workers' CPUs. The
    # workers of --cluster local are this machine's: "auto" means what it means here.
    elsewhere = args.cluster and args.cluster != "local"
    device = (args.device if args.device != "auto" else "cpu") if elsewhere else grade.resolve_device(args.device)
    options = grade.Options(device=device, jobs=args.jobs, force=args.force, require_sandbox=args.require_sandbox,
                            fork_server=args.fork_server, threads=args.threads)
    found = intake.gather(Path(args.submissions), assignment=assignment.name, notebook_name=assignment.notebook,
                          roster=_roster(args, course))
    out = Path(args.out or course.root / "out" / assignment.name)
    subs = found.submissions
    if args.student:
        unknown = sorted(set(args.student) - {s.student_id for s in subs})
        if unknown:
            raise ValueError(f"--student {', '.join(unknown)}: no such student in {args.submissions} "
                             f"(run 'autograder status' to list the students found there)")
        # Only these are graded (again); the reports still cover everyone handed in and graded before.
        subs, options = [s for s in subs if s.student_id in args.student], replace(options, force=True)
    with _pool(args, course, out) as pool:
        results = grade.grade(assignment, subs, out, options, progress=grade.Progress(lang=args.lang), pool=pool)
    ids = {s.student_id for s in found.submissions}
    results = [r for r in results if r.student_id in ids]
    _reports(args, course, assignment, results, out, found)
    return 0


def _pool(args, course, out: Path):
    """Where the runs happen: --cluster's Dask workers, else this machine (None)."""
    if not args.cluster:
        return contextlib.nullcontext()
    from .cluster import ClusterPool

    return ClusterPool.connect(args.cluster, course, logs=out / "slurm-logs", jobs=args.jobs)


def _reports(args, course, assignment, results, out: Path, found) -> None:
    """Everything a batch writes from its results: grades.csv, the feedback pages, the class report, the
    gradebook, and in an nbgrader course its autograded/ and feedback/ folders. All of it from the results and
    the lab's [late] policy as they are now, so running it again after a change of due date re-scores the class."""
    from . import classreport, gradebook, grade, late, nbcourse, report

    lateness = {r.student_id: late.assess(assignment.late, r) for r in results}
    try:
        curve = grade.reference_losses(assignment)
    except Exception as exc:  # a picture is not worth a batch: the pages say the curve is missing
        logging.getLogger(__name__).warning("no answer-key loss curve for the feedback: %s", exc)
        curve = None
    parts = list(assignment.points)
    report.write_grades_csv(results, out / "grades.csv", parts, lateness=lateness)
    report.write_feedback(results, out, args.lang, assignment_title=assignment.name, lateness=lateness,
                          reference_losses=curve)
    notes = found.summary_lines(lang=args.lang) if found is not None else []
    classreport.write_class_report(results, out / "class_report.html", assignment_title=assignment.name,
                                   lateness=lateness, lang=args.lang, intake_lines=notes)
    nb = nbcourse.find(Path(args.submissions)) if found is not None else None
    # An nbgrader course keeps its own gradebook: formgrader, generate_feedback and `nbgrader export` read it.
    db = args.db or (nb.db_url if nb is not None else gradebook.default_db_url(out))
    if nb is not None and args.db and args.db != nb.db_url:
        print(f"warning: --db {args.db} is not the nbgrader course's gradebook ({nb.db_url}); "
              "'nbgrader generate_feedback' will not see these scores", file=sys.stderr)
    gradebook.record(db, assignment, results,
                     course_id=nb.course_id if nb is not None and nb.course_id else "default_course")
    if nb is not None:
        released = course.release_dir / assignment.name / assignment.notebook  # what was graded against
        written = nbcourse.write_autograded(nb, assignment, results, found.submissions, lang=args.lang,
                                            release=released)
        written += nbcourse.write_feedback(nb, assignment, results, lang=args.lang, render=lambda r: report.feedback_html(
            r, lang=args.lang, assignment_title=assignment.name, lateness=lateness[r.student_id],
            reference_losses=curve))
        for w in written:
            if w.note:
                print(f"nbgrader: {report._printable(w.student_id)}: {w.note}", file=sys.stderr)
    print(report.summary_table(results, parts, lateness=lateness))
    for line in notes:
        print(line)
    print(f"\ngrades: {out / 'grades.csv'}   feedback: {out / 'feedback'}   class report: "
          f"{out / 'class_report.html'}   gradebook: {db}")
    if nb is not None:
        print(f"nbgrader: {nb.root / nb.autograded} and {nb.root / nb.feedback} written; 'nbgrader "
              "generate_feedback', 'release_feedback' and 'export' now see these scores")


def _roster(args, course):
    """--roster, else the course's roster.csv when there is one; None without either."""
    from . import roster

    path = Path(args.roster) if args.roster else course.root / "roster.csv"
    if not args.roster and not path.is_file():
        return None
    return roster.read_roster(path)


def _status(args) -> int:
    from . import intake, status

    course = Course.at(args.course)
    assignment = course.lab(args.assignment)
    found = intake.gather(Path(args.submissions), assignment=assignment.name, notebook_name=assignment.notebook,
                          roster=_roster(args, course))
    out = Path(args.out or course.root / "out" / assignment.name)
    print(status.table(assignment, found, out))
    return 0


def _export(args) -> int:
    from . import export
    from .results import ResultStore, fingerprint

    course = Course.at(args.course)
    assignment = course.lab(args.assignment)
    out = Path(args.out or course.root / "out" / assignment.name)
    store = ResultStore(out)
    results = store.load_all(fingerprint(assignment))
    if not results:
        raise ValueError(f"no results of {assignment.name} as it is now in {out}: run 'autograder grade' first")
    stale = len(store.load_all()) - len(results)
    if stale:
        print(f"left out: {stale} result(s) graded before {assignment.name} changed; run 'autograder grade' "
              "again to grade them as it is now", file=sys.stderr)
    roster = _roster(args, course)
    path = Path(args.output or out / f"{assignment.name}-{args.format}.csv")
    written = export.export(args.format, results, assignment, path, roster=roster.students if roster else None,
                            column=args.column)
    print(written.summary())
    # A grade that could not be placed would be lost on upload: the TA must see a failure, not a success.
    return 1 if any(u.grade for u in written.unplaced) else 0


def _validate(args) -> int:
    import tempfile

    from . import grade, report
    from .submissions import Submission

    path = Path(args.notebook)
    sub = Submission(student_id=path.stem or "notebook", notebook=path.read_bytes(), source=str(path))
    assignment = Course.at(args.course).lab_of(sub.notebook, args.assignment)
    options = grade.Options(device=grade.resolve_device(args.device), jobs=1, force=True,
                            require_sandbox=args.require_sandbox, fork_server=args.fork_server)
    with tempfile.TemporaryDirectory(prefix="autograder-validate-") as out:
        [result] = grade.grade(assignment, [sub], Path(out), options)
    print(report.feedback_text(result, lang=args.lang))
    return 0


def _calibrate(args) -> int:
    from . import calibrate, grade

    assignment = Course.at(args.course).lab(args.assignment)
    options = grade.Options(device=grade.resolve_device(args.device), jobs=args.jobs, threads=args.threads)

    def progress(seed, accuracy):
        print(f"seed offset {seed}: test accuracy {accuracy:.4f}", flush=True)

    result = calibrate.calibrate(assignment, seeds=args.seeds, options=options, progress=progress)
    print(result.summary)
    current = assignment.accuracy
    print(f"assignment.toml now: threshold {current.threshold:.2f}, margin {current.margin:.3f}")
    return 0


def _cache_root() -> Path:
    """grade.cache_dir(), without importing torch: $AUTOGRADER_CACHE, else $XDG_CACHE_HOME/autograder, else
    ~/.cache/autograder."""
    if os.environ.get("AUTOGRADER_CACHE"):
        return Path(os.environ["AUTOGRADER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autograder"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autograder", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (default: warnings only)")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("release", help="generate the student notebook (nbgrader) and the executed answer key")
    p.add_argument("assignment", nargs="?", help="the lab's folder name (default: every lab of the course)")
    _course_option(p)
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 and name the files when release/ or solutions/ is stale")
    p.set_defaults(func=_release)

    p = commands.add_parser("grade", help="grade a class: sandboxed runs, hidden checks, grades.csv, feedback, gradebook")
    p.add_argument("submissions", help="a folder of <student>.ipynb, nbgrader's submitted/ tree, or a .zip of either")
    p.add_argument("--assignment", help="the lab's folder name, or a lab folder's path (default: the course's only lab)")
    _course_option(p)
    _run_options(p)
    _pool_options(p)
    p.add_argument("--out", help="output folder (default: out/<assignment>)")
    p.add_argument("--db", help="nbgrader gradebook URL (default: sqlite:///<out>/gradebook.db)")
    p.add_argument("--force", action="store_true", help="grade again students already graded in --out")
    p.add_argument("--cluster", metavar="ADDRESS|slurm|local",
                   help="grade on a Dask cluster: a running scheduler's address (tcp://host:8786), 'slurm' to "
                        "start workers as Slurm jobs from course.toml's [cluster] table, or 'local' for --jobs "
                        "grading processes on this machine, each with a judge of its own (a machine with many "
                        "cores or a GPU, where one judge can not keep up) (default: this machine's own pool)")
    p.add_argument("--student", action="append", metavar="ID",
                   help="grade (again) only this student; repeat for more. The reports still cover the whole class")
    _roster_option(p)
    p.set_defaults(func=_grade)

    p = commands.add_parser("status", help="who is graded, stale, not yet graded, missing or late")
    p.add_argument("submissions", help="what 'autograder grade' would be given")
    p.add_argument("--assignment", help="the lab's folder name (default: the course's only lab)")
    _course_option(p)
    p.add_argument("--out", help="the batch's output folder (default: out/<assignment>)")
    _roster_option(p)
    p.set_defaults(func=_status)

    p = commands.add_parser("export", help="the grades as an LMS imports them: Canvas, Moodle or Gradescope CSV")
    p.add_argument("--format", required=True, choices=["canvas", "moodle", "gradescope"])
    p.add_argument("--assignment", help="the lab's folder name (default: the course's only lab)")
    _course_option(p)
    p.add_argument("--out", help="the batch's output folder (default: out/<assignment>)")
    p.add_argument("-o", "--output", help="the file to write (default: <out>/<assignment>-<format>.csv)")
    p.add_argument("--column", help="Canvas: the gradebook column to fill, as Canvas names it, e.g. "
                                    "'CNN lab (123456)' (default: the assignment's name)")
    _roster_option(p)
    p.set_defaults(func=_export)

    p = commands.add_parser("validate", help="grade one notebook and print its report (visible checks, accuracy run)")
    p.add_argument("notebook", help="the .ipynb to check")
    p.add_argument("--assignment", help="the lab's folder name, or a lab folder's path (default: the lab whose "
                                        "graded cells the notebook holds)")
    _course_option(p)
    _run_options(p)
    p.set_defaults(func=_validate)

    p = commands.add_parser("calibrate", help="train the answer key across seeds; recommend an accuracy threshold")
    p.add_argument("--assignment", help="the lab's folder name, or a lab folder's path (default: the course's only lab)")
    _course_option(p)
    p.add_argument("--seeds", type=int, default=20, help="how many seeds (default: 20)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default: auto)")
    _pool_options(p)
    p.set_defaults(func=_calibrate)
    return parser


def _course_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--course", default=".", help="the course folder: assignments/, release/, solutions/ "
                                                 "(default: the current directory, as with nbgrader)")


def _roster_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--roster", help="the class list: the kit's roster CSV, a Canvas gradebook export or a Moodle "
                                    "grading worksheet (default: <course>/roster.csv when there is one)")


def _pool_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, default=0, help="sandboxes at once (default: the number of cores)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per sandbox (default: (cores - 1) / jobs, at least 1; at most the cores. "
                        "The trained weights depend on it to the last bit)")


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where students' training and the accuracy evaluation run (default: auto)")
    p.add_argument("--lang", choices=["ja", "en"], default="ja", help="language of the feedback (default: ja)")
    p.add_argument("--require-sandbox", action="store_true",
                   help="refuse to grade when bubblewrap is unavailable (default: warn and grade with limits only)")
    p.add_argument("--no-fork-server", dest="fork_server", action="store_false",
                   help="a sandbox of its own that imports torch for every submission, even where the batch's "
                        "fork server could fork them (on CPU, as root, with bubblewrap; see README)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torch._dynamo makes its compiler cache folder as it is imported (the judge's checks import it), under
    # TMPDIR by default: a batch leaves nothing in the temporary folder, so it goes to the kit's own cache.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_cache_root() / "torchinductor"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (config.ConfigError, RuntimeError, ValueError) as exc:
        print(f"autograder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = " Run the same command again to grade the rest." if args.command == "grade" else ""
        print(f"\nautograder {args.command}: interrupted; every result already saved is kept.{again}",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
