"""The hidden-check runner: one pytest session re-runs every check on each submission, points by weight,
nothing carried over between submissions, broken checks refused up front."""

from __future__ import annotations

import shutil
import textwrap
import threading

import pytest

from autograder import config
from autograder.checks import NEUTRAL, CheckSession, HiddenChecksError

CHECKS = '''
import pytest

from autograder.judge import fail


@pytest.fixture(scope="module")
def seen():
    return []  # module-scoped: must be new for every submission


@pytest.mark.check("shapes", "重い", "heavy", weight=3)
def check_heavy(ctx, seen):
    seen.append(ctx["id"])
    if len(seen) != 1:
        fail("持ち越し", f"a fixture carried over between submissions: {seen}")
    if ctx["heavy"] == "half":
        fail("半分", "half of it", fraction=0.5)


@pytest.mark.check("shapes", "軽い", "light")
def check_light(ctx):
    if ctx["light"] == "crash":
        raise KeyError("internal detail of the hidden check")


@pytest.mark.check("training", "正解率", "accuracy")
def check_accuracy(ctx):
    if ctx["accuracy"] == "fail":
        fail("低い", "too low")


@pytest.mark.check("training", "その他", "the rest")
def check_rest(ctx):
    pass
'''


def course(tmp_path, assignment, files: dict[str, str]):
    folder = tmp_path / assignment.name
    shutil.copytree(assignment.folder, folder, ignore=shutil.ignore_patterns("hidden"))
    (folder / "hidden").mkdir()
    for name, text in files.items():
        (folder / "hidden" / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return config.load(folder)


def by_name(results):
    return {r.name: r for r in results}


def test_points_are_shared_by_weight_and_fixed_points_kept(tmp_path, assignment):
    a = course(tmp_path, assignment, {"checks_demo.py": CHECKS})
    with CheckSession(a) as checks:
        full = by_name(checks.run({"id": 1, "heavy": "ok", "light": "ok", "accuracy": "ok"}))
        partial = by_name(checks.run({"id": 2, "heavy": "half", "light": "crash", "accuracy": "fail"}))
        again = by_name(checks.run({"id": 3, "heavy": "ok", "light": "ok", "accuracy": "ok"}))
    # shapes (20) shared 3:1; training (35) keeps its fixed 15 for the accuracy and shares the other 20.
    assert {n: r.max_points for n, r in full.items()} == {"heavy": 15, "light": 5, "accuracy": 15, "rest": 20}
    assert {n: r.points for n, r in full.items()} == {"heavy": 15, "light": 5, "accuracy": 15, "rest": 20}
    assert all(r.message is None for r in full.values())
    assert partial["heavy"].points == 7.5 and partial["heavy"].message.en == "half of it"
    assert partial["light"].points == 0 and partial["light"].message == NEUTRAL  # never the check's own error
    assert partial["accuracy"].points == 0 and partial["accuracy"].message.ja == "低い"
    assert partial["rest"].points == 20
    assert partial["heavy"].part == "shapes" and partial["heavy"].title.ja == "重い"
    assert again == full  # the third submission is judged as if it were the first


def test_one_session_serves_several_threads(tmp_path, assignment):
    a = course(tmp_path, assignment, {"checks_demo.py": CHECKS})
    results = {}
    with CheckSession(a) as checks:
        def judge(i):
            ctx = {"id": i, "heavy": "half" if i % 2 else "ok", "light": "ok", "accuracy": "ok"}
            results[i] = by_name(checks.run(ctx))["heavy"].points

        threads = [threading.Thread(target=judge, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {i: 7.5 if i % 2 else 15 for i in range(6)}


@pytest.mark.parametrize("files, expected", [
    ({"checks_demo.py": "def check_x(ctx):\n    pass\n"}, "check_x lack @pytest.mark.check"),
    ({"checks_demo.py": CHECKS, "checks_broken.py": "def check_y(ctx:\n"}, "checks_broken.py"),
    ({"checks_demo.py": "import no_such_module_here\n"}, "checks_demo.py"),
    ({"helpers.py": "X = 1\n"}, "no check_* functions"),
])
def test_broken_hidden_checks_are_refused_with_the_reason(tmp_path, assignment, files, expected):
    a = course(tmp_path, assignment, files)
    with pytest.raises(HiddenChecksError) as info:
        CheckSession(a)
    assert expected in str(info.value)
    assert a.name in str(info.value)
