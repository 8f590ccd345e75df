"""The ``autograder`` command: a thin layer of argparse over the step modules."""

from __future__ import annotations

import argparse
import logging
import sys

from . import config


def _release(args) -> int:
    from . import release

    assignment = config.find(args.assignment)
    outcomes = release.run(assignment, check=args.check)
    stale = [o.path for o in outcomes if o.changed]
    if args.check:
        for path in stale:
            print(f"stale: {path} (run 'autograder release {assignment.name}' and commit the result)")
        if not stale:
            print(f"release and answer key of {assignment.name} are up to date")
        return 1 if stale else 0
    for outcome in outcomes:
        print(f"{'wrote' if outcome.changed else 'unchanged'}: {outcome.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autograder", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (default: warnings only)")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("release", help="generate the student notebook (nbgrader) and the executed answer key")
    p.add_argument("assignment", nargs="?", default="cnn_mnist", help="assignment folder name (default: cnn_mnist)")
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 and name the files when release/ or solutions/ is stale")
    p.set_defaults(func=_release)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (config.ConfigError, RuntimeError, ValueError) as exc:
        print(f"autograder {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
