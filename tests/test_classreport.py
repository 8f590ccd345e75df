"""The class report for the TA: its sections, the numbers in them (pass rates, statuses, scores after late
penalties, accuracy against the threshold, the slowest runs), its pictures, and escaping."""

from __future__ import annotations

import base64
import html
import html.parser
import re
from dataclasses import replace

import pytest

from autograder import classreport
from autograder.config import Late
from autograder.late import assess
from autograder.results import CRASHED, GRADED, LIMIT, CheckResult, Measures, Message, SubmissionResult, invalid

from pages import parse

MAX = {"shapes": 20.0, "training": 30.0}
HOSTILE = "<img src=x onerror=alert(1)>"
LATE = Late(due="2025-12-07T23:59:00+09:00", penalty="per_day", points=5, cap=20)


def check(name, part, passed, max_points=10.0):
    return CheckResult(name=name, part=part, title=Message(f"{name} の確認", f"check {name}"),
                       points=max_points if passed else 0.0, max_points=max_points,
                       message=None if passed else Message("違います", "wrong"))


def result(sid, stride=True, pool=True, steps=True, accuracy=None, seconds=10.0, submitted_at="", status=GRADED,
           reason=None, **kw):
    """shapes: stride (10) and pool (10); training: steps (30)."""
    checks = (check("stride", "shapes", stride), check("pool", "shapes", pool), check("steps", "training", steps, 30))
    parts = {"shapes": 10.0 * stride + 10.0 * pool, "training": 30.0 * steps}
    measures = Measures(accuracy=accuracy, threshold=0.9) if accuracy is not None else None
    return SubmissionResult(student_id=sid, status=status, reason=reason, parts=parts, max_parts=dict(MAX),
                            checks=checks, seconds=seconds, submitted_at=submitted_at, measures=measures, **kw)


def klass():
    """Five students and one notebook that could not run:
    stride passed by 1 of 5, steps by 3 of 5, pool by all 5; the invalid one has no checks at all."""
    return [
        result("a01", stride=True, accuracy=0.97, seconds=5.0, submitted_at="2025-12-07T10:00:00+09:00"),
        result("a02", stride=False, accuracy=0.95, seconds=30.0, submitted_at="2025-12-08T03:00:00+09:00"),
        result("a03", stride=False, steps=False, accuracy=0.40, seconds=12.5,
               submitted_at="2025-12-10T12:00:00+09:00"),  # 60 h late: three started days, -15
        result("a04", stride=False, steps=False, status=LIMIT, seconds=95.0,
               reason=Message("制限時間を超えました", "the time limit was reached")),
        result("a05", stride=False, accuracy=0.92, seconds=8.0, late_mark=True),  # the LMS's mark only
        invalid("a06", Message("ノートブックを読めません", "not a readable notebook"), MAX),
    ]


def lateness(results):
    return {r.student_id: assess(LATE, r) for r in results}




def section(page, name) -> str:
    """One section's HTML."""
    return re.search(rf'<section id="{name}">(.*?)</section>', page, re.DOTALL).group(1)


def rows(fragment) -> list[list[str]]:
    """The table rows of an HTML fragment as lists of cell texts (tags removed)."""
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr)]
            for tr in re.findall(r"<tr>(.*?)</tr>", fragment, re.DOTALL)]


def svgs(fragment) -> list[str]:
    out = []
    for tag, attrs in parse(fragment).tags:
        if tag == "img":
            assert attrs["src"].startswith("data:image/svg+xml;base64,")
            out.append(base64.b64decode(attrs["src"].split(",", 1)[1]).decode("utf-8"))
    return out


# ------------------------------------------------------------------------------------------------------ numbers

def test_check_rates_count_only_the_results_where_the_check_ran():
    rates = classreport.check_rates(klass())
    assert [(c.name, c.passed, c.judged) for c in rates] == [("stride", 1, 5), ("steps", 3, 5), ("pool", 5, 5)]
    assert [c.rate for c in rates] == [0.2, 0.6, 1.0]
    assert rates[0].lost == 40 and rates[0].mean_lost == 8 and rates[1].mean_lost == 12
    assert rates[0].title == Message("stride の確認", "check stride")


def test_check_rates_break_ties_by_points_lost():
    results = [result("x", stride=False, steps=True), result("y", stride=True, steps=False)]
    assert [c.name for c in classreport.check_rates(results)] == ["steps", "stride", "pool"]  # 30 lost before 10


def test_scores_are_after_the_late_penalty():
    results = klass()
    assert classreport.scores(results, lateness(results)) == [50, 35, 0, 10, 35, 0]  # a03's 15 off stop at its 10
    assert classreport.scores(results, None) == [50, 40, 10, 10, 40, 0]


# ------------------------------------------------------------------------------------------------------ the page

def test_class_report_has_every_section_with_its_numbers():
    results = klass()
    page = classreport.class_report_html(results, "CNN on MNIST", lateness=lateness(results),
                                         intake_lines=["superseded: a02's first notebook", "",
                                                       "missing: a07 handed in nothing"])
    parsed = parse(page)
    assert parsed.sections == ["scores", "checks", "statuses", "accuracy", "late", "slowest", "intake"]
    assert [a["href"] for t, a in parsed.tags if t == "a"] == [f"#{s}" for s in parsed.sections]
    assert "CNN on MNIST: Class report" in "".join(parsed.text)

    scores = re.sub(r"<[^>]+>", "", section(page, "scores"))
    for stat in ("students: 6", "mean: 21.67", "median: 22.5", "lowest: 0", "highest: 50", "at full points: 1",
                 "at zero: 2", "out of: 50"):
        assert stat in scores, stat

    checks = rows(section(page, "checks"))
    assert checks[0] == ["Check", "Part", "Passed", "Failed", "Pass rate", "Mean points lost"]
    assert checks[1:] == [["check stride (stride)", "shapes", "1", "4", "20%", "8"],
                          ["check steps (steps)", "training", "3", "2", "60%", "12"],
                          ["check pool (pool)", "shapes", "5", "0", "100%", "0"]]

    statuses = section(page, "statuses")
    assert rows(statuses)[1:5] == [["graded", "4"], ["limit", "1"], ["crashed", "0"], ["invalid", "1"]]
    assert ["a04", "limit", "the time limit was reached"] in rows(statuses)
    assert ["a06", "invalid", "not a readable notebook"] in rows(statuses)

    accuracy = re.sub(r"<[^>]+>", "", section(page, "accuracy"))
    for stat in ("measured: 4", "median: 93.50%", "lowest: 40.00%", "highest: 97.00%", "threshold: 90.00%",
                 "at or above the threshold: 3"):
        assert stat in accuracy, stat

    late = rows(section(page, "late"))
    assert late[1:] == [["a03", "2025-12-10T12:00:00+09:00", "2.5 days", "-10", "10 → 0"],
                        ["a02", "2025-12-08T03:00:00+09:00", "3.0 h", "-5", "40 → 35"],
                        ["a05", "", "marked late by the LMS (time unknown)", "-5", "40 → 35"]]

    slowest = rows(section(page, "slowest"))
    assert [r[0] for r in slowest[1:]] == ["a04", "a02", "a03", "a05", "a01", "a06"]
    assert slowest[1] == ["a04", "95.0", "limit"]

    intake = section(page, "intake")
    assert re.findall(r"<li>(.*?)</li>", intake) == ["superseded: a02&#x27;s first notebook",
                                                     "missing: a07 handed in nothing"]


def test_class_report_pictures():
    results = klass()
    page = classreport.class_report_html(results, "CNN", lateness=lateness(results))
    assert len(svgs(section(page, "scores"))) == 1
    assert len(svgs(section(page, "checks"))) == 1
    assert len(svgs(section(page, "accuracy"))) == 1
    assert len(svgs(page)) == 3
    assert not any(t in ("script", "link") for t, _ in parse(page).tags)
    # Nobody measured, everyone passed: sentences instead of two of the pictures.
    plain = [result(f"p{i}") for i in range(3)]
    page = classreport.class_report_html(plain, "CNN")
    assert len(svgs(page)) == 1  # the scores only
    assert "Everyone passed every check." in page and "No submission had its test accuracy measured." in page
    assert "No late submissions." in page and "Nothing to report." in page


def test_slowest_runs_are_at_most_ten():
    results = [result(f"s{i:02d}", seconds=float(i)) for i in range(14)]
    slowest = rows(section(classreport.class_report_html(results, "CNN"), "slowest"))
    assert [r[0] for r in slowest[1:]] == [f"s{i:02d}" for i in range(13, 3, -1)]


def test_class_report_in_japanese_and_an_empty_class():
    results = klass()
    page = classreport.class_report_html(results, "CNN", lateness=lateness(results), lang="ja")
    assert '<html lang="ja">' in page and "確認項目（不合格の多い順）" in page and "stride の確認" in page
    assert "LMS の遅延マーク（時間不明）" in page and "2.5 日" in page and "3.0 時間" in page
    empty = classreport.class_report_html([], "CNN")
    assert "No results yet." in empty and "<img" not in empty
    with pytest.raises(ValueError, match="lang"):
        classreport.class_report_html(results, "CNN", lang="fr")


def test_class_report_escapes_what_students_and_files_bring():
    evil = replace(result(HOSTILE, stride=False, seconds=99.0, submitted_at="2025-12-09T00:00:00+09:00"),
                   student={"name": "</td><script>x</script>"}, status=CRASHED, reason=Message(HOSTILE, HOSTILE))
    rlo = result("b\u202eevil", seconds=98.0)
    page = classreport.class_report_html([evil, rlo], f"{HOSTILE} lab", lateness=lateness([evil, rlo]),
                                         intake_lines=[f"unmatched: {HOSTILE}.ipynb", "x\x1b[31m"])
    parsed = parse(page)
    assert {t for t, _ in parsed.tags} & {"script", "svg"} == set()
    assert all(a.get("src", "").startswith("data:image/svg+xml;base64,") for t, a in parsed.tags if t == "img")
    assert "onerror" not in "".join(str(a) for _, a in parsed.tags)
    text = "".join(parsed.text)
    assert f"{HOSTILE} (</td><script>x</script>)" in text  # shown as text, exactly
    assert "\u202e" not in page and "b\\u202eevil" in text  # a right-to-left override shown, not obeyed
    assert "\x1b" not in page and f"unmatched: {HOSTILE}.ipynb" in text


def test_write_class_report(tmp_path):
    results = klass()
    path = classreport.write_class_report(results, tmp_path / "cnn_mnist", "CNN", lateness=lateness(results),
                                          intake_lines=["missing: a07"])
    assert path == tmp_path / "cnn_mnist" / "class_report.html"
    text = path.read_text(encoding="utf-8")
    assert text == classreport.class_report_html(results, "CNN", lateness=lateness(results),
                                                 intake_lines=["missing: a07"])
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # written atomically


def test_write_class_report_to_a_named_file(tmp_path):
    path = classreport.write_class_report(klass(), tmp_path / "out" / "class_report.html", "CNN")
    assert path == tmp_path / "out" / "class_report.html" and path.is_file()


# ------------------------------------------------------------------------- the terminal summary, late and long ids

def test_summary_table_shows_the_penalty_and_the_score_after_it():
    from autograder import report

    results = klass()
    text = report.summary_table(results, ["shapes", "training"], lateness=lateness(results))
    lines = text.splitlines()
    assert lines[0].split() == ["student", "shapes", "training", "total", "late", "score", "status"]
    assert lines[2].split() == ["(max)", "20", "30", "50", "50"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:9]}
    assert rows["a01"] == ["20", "30", "50", "50", "graded"]
    assert rows["a02"] == ["10", "30", "40", "-5", "35", "graded"]
    assert rows["a03"] == ["10", "0", "10", "-10", "0", "graded"]
    assert rows["a05"] == ["10", "30", "40", "-5", "35", "graded"]
    assert "late: 3 (3 with points off); score after the penalty: mean 21.67, median 22.5" in text
    # Nobody late: the table is as it always was.
    on_time = [results[0], results[3]]
    assert report.summary_table(on_time, ["shapes"], lateness=lateness(on_time)) == \
        report.summary_table(on_time, ["shapes"])


def test_summary_table_widens_ids_that_would_look_the_same_cut():
    from autograder import report

    stems = ["login01_LATE_12347_67892_cnn_mnist-1", "login01_LATE_12347_67892_cnn_mnist-2", "short"]
    text = report.summary_table([result(s) for s in stems], ["shapes"])
    assert all(s in text for s in stems)  # told apart: the column is as wide as it needs to be
    one = report.summary_table([result(stems[0]), result("short")], ["shapes"])
    assert stems[0] not in one and stems[0][:23] + "…" in one  # alone, a long id is still cut at 24 columns
