"""The ``autograder`` command: a thin layer of argparse over the step modules."""

from __future__ import annotations

import argparse
import logging
import sys
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
    from . import gradebook, grade, report, submissions

    course = Course.at(args.course)
    assignment = course.lab(args.assignment)
    options = grade.Options(device=grade.resolve_device(args.device), jobs=args.jobs, force=args.force,
                            require_sandbox=args.require_sandbox, fork_server=args.fork_server,
                            threads=args.threads)
    subs = submissions.collect(Path(args.submissions), assignment=assignment.name)
    out = Path(args.out or course.root / "out" / assignment.name)
    ids = {s.student_id for s in subs}
    results = [r for r in grade.grade(assignment, subs, out, options, progress=grade.Progress(lang=args.lang))
               if r.student_id in ids]
    parts = list(assignment.points)
    report.write_grades_csv(results, out / "grades.csv", parts)
    report.write_feedback(results, out, args.lang, assignment_title=assignment.name)
    gradebook.record(args.db or gradebook.default_db_url(out), assignment, results)
    print(report.summary_table(results, parts))
    print(f"\ngrades: {out / 'grades.csv'}   feedback: {out / 'feedback'}   gradebook: {args.db or out / 'gradebook.db'}")
    return 0


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
    p.set_defaults(func=_grade)

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
