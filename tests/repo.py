"""The course this checkout holds (README: a course is a folder). The tests grade it; the kit never refers to it."""

from pathlib import Path

from autograder.course import Course

REPO_ROOT = Path(__file__).resolve().parent.parent
COURSE = Course.at(REPO_ROOT)
