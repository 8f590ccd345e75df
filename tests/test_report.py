"""The TA outputs (grades CSV, class summary) and the student feedback pages, from results built in code."""

from __future__ import annotations

import csv
import re
from urllib.parse import quote

import pytest

from autograder import report
from autograder.results import CRASHED, GRADED, CheckResult, Message, SubmissionResult, invalid

from pages import parse

PARTS = ["shapes", "net", "accuracy"]
MAX = {"shapes": 20.0, "net": 25.0, "accuracy": 15.0}
HOSTILE = "<script>alert(1)</script>"


def check(name, part, points, max_points, message=None):
    return CheckResult(name=name, part=part, title=Message(ja=f"{name} の確認", en=f"check {name}"),
                       points=points, max_points=max_points, message=message)


def full(student_id="alice"):
    return SubmissionResult(student_id=student_id, status=GRADED, reason=None, parts=dict(MAX), max_parts=dict(MAX),
                            checks=(check("shapes.conv", "shapes", 20, 20), check("net.layers", "net", 25, 25),
                                    check("accuracy.test", "accuracy", 15, 15)), seconds=41.25)


def partial(student_id="山田 太郎"):
    lost = Message(ja="期待値: (26, 26)\n実際: (28, 28)\nヒント: パディングは 0",
                   en="expected (26, 26)\nobserved (28, 28)\nhint: no padding")
    return SubmissionResult(
        student_id=student_id, status=CRASHED,
        reason=Message(ja="学習中にプロセスが終了しました", en="the process exited during training"),
        parts={"shapes": 10.0, "net": 25.0, "accuracy": 2.5}, max_parts=dict(MAX),
        checks=(check("shapes.conv", "shapes", 0, 10, lost), check("shapes.pool", "shapes", 10, 10),
                check("net.layers", "net", 25, 25),
                check("accuracy.test", "accuracy", 2.5, 15, Message(ja="正解率 0.55", en="accuracy 0.55"))),
        notes=(Message(ja="print が多すぎます", en="too much print output"),), seconds=7.0)


def broken(student_id="=cmd|' /C calc'!A0"):
    return invalid(student_id, Message(ja="ノートブックを読めません", en="not a readable notebook"), MAX)


def hostile():
    msg = Message(ja=f"観測: {HOSTILE}", en=f"observed {HOSTILE} & \"quotes\"")
    return SubmissionResult(student_id=HOSTILE, status=GRADED, reason=Message(ja=HOSTILE, en=HOSTILE),
                            parts={"shapes": 0.0, "net": 25.0, "accuracy": 15.0}, max_parts=dict(MAX),
                            checks=(CheckResult(name="shapes.x", part="shapes", title=Message(HOSTILE, HOSTILE),
                                                points=0, max_points=20, message=msg),),
                            notes=(Message(HOSTILE, HOSTILE),))


# ---------------------------------------------------------------------------------------------------------- CSV

def read_csv(path):
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


def test_grades_csv_rows(tmp_path):
    path = report.write_grades_csv([full(), partial(), broken()], tmp_path / "grades.csv", PARTS)
    rows = read_csv(path)
    assert rows[0] == ["student_id", "shapes", "net", "accuracy", "total", "max_total", "status", "reason",
                       "reason_ja", "seconds", "submitted_at", "late_penalty", "score", "graded_on"]
    # Without a late policy nothing is taken off: the score is the total.
    assert rows[1] == ["alice", "20", "25", "15", "60", "60", "graded", "", "", "41.2", "", "0", "60", ""]
    assert rows[2] == ["山田 太郎", "10", "25", "2.5", "37.5", "60", "crashed", "the process exited during training",
                       "学習中にプロセスが終了しました", "7.0", "", "0", "37.5", ""]
    # The formula-looking id is defused with a leading quote; the rest of the row is untouched.
    assert rows[3] == ["'=cmd|' /C calc'!A0", "0", "0", "0", "0", "60", "invalid", "not a readable notebook",
                       "ノートブックを読めません", "0.0", "", "0", "0", ""]
    assert not list(tmp_path.glob(".*"))  # the temp file was renamed away


@pytest.mark.parametrize("sid", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "＝1+1"])
def test_csv_formula_guard(tmp_path, sid):
    rows = read_csv(report.write_grades_csv([full(sid)], tmp_path / "g.csv", PARTS))
    assert rows[1][0] == "'" + sid


def test_csv_without_bom_and_missing_part(tmp_path):
    r = SubmissionResult(student_id="bob", status=GRADED, reason=None, parts={"shapes": 20.0},
                         max_parts={"shapes": 20.0})
    path = report.write_grades_csv([r], tmp_path / "g.csv", ["shapes", "net"], bom=False)
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert path.read_text(encoding="utf-8").splitlines()[1] == "bob,20,,20,20,graded,,,0.0,,0,20,"


# ------------------------------------------------------------------------------------------------------ summary

def test_summary_table_aligns_wide_ids_and_counts():
    long_id = "x" * 60
    ids = [long_id, "a\x1b[31mred", "b\u202eevil"]
    text = report.summary_table([full(), partial(), broken(), *map(full, ids)], PARTS)
    lines = text.splitlines()
    table = lines[:lines.index("")]
    # Every table line has its status column start at the same display column, Japanese id included.
    starts = {report._width(line[:line.rindex("  ") + 2]) for line in table[3:]}
    assert len(starts) == 1, text
    assert any(line.startswith("山田 太郎 ") for line in table)
    assert "x" * 23 + "…" in text and long_id not in text  # truncated to MAX_ID_WIDTH columns
    assert "\x1b" not in text and "a\\x1b[31mred" in text  # no terminal escapes reach the TA's screen
    assert "\u202e" not in text and "b\\u202eevil" in text  # nor a right-to-left override
    assert table[0].split() == ["student", "shapes", "net", "accuracy", "total", "status"]
    assert table[2].split() == ["(max)", "20", "25", "15", "60"]
    assert "status: graded 4, limit 0, crashed 1, invalid 1" in text
    assert "total: mean 46.25, median 60 of 60 (6 students)" in text


def test_summary_table_truncates_wide_ids_by_width():
    text = report.summary_table([full("山" * 30)], PARTS)
    cut = "山" * 11 + "…"  # 22 columns + the ellipsis fit in 24
    assert cut in text and report._width(cut) <= report.MAX_ID_WIDTH


def test_summary_empty():
    assert report.summary_table([], PARTS) == "no results"


# ----------------------------------------------------------------------------------------------------- feedback



def test_feedback_escapes_hostile_values():
    page = report.feedback_html(hostile())
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;quotes&quot;" in report.feedback_html(hostile(), lang="en")
    parsed = parse(page)
    assert "script" not in {t for t, _ in parsed.tags}
    assert HOSTILE in "".join(parsed.text)  # shown to the student as text, exactly


def test_feedback_japanese_default():
    page = report.feedback_html(partial())
    parsed = parse(page)
    assert ("html", {"lang": "ja"}) in parsed.tags
    assert ("meta", {"charset": "utf-8"}) in parsed.tags
    assert not any(t in ("link", "script", "img") for t, _ in parsed.tags)  # self-contained
    text = "".join(parsed.text)
    assert "山田 太郎" in text and "37.5 / 60" in text
    assert "学習中にプロセスが終了しました" in text and "実行中に異常終了" in text
    assert "期待値: (26, 26)\n実際: (28, 28)" in text  # the message of a check that lost points
    assert "shapes.conv の確認" in text and "0 / 10" in text and "正解率 0.55" in text
    assert "print が多すぎます" in text
    assert "expected" not in text


def test_feedback_english():
    page = report.feedback_html(partial(), lang="en", assignment_title="CNN on MNIST")
    parsed = parse(page)
    assert ("html", {"lang": "en"}) in parsed.tags
    text = "".join(parsed.text)
    assert "CNN on MNIST" in text and "expected (26, 26)\nobserved (28, 28)" in text and "too much print output" in text
    assert "学習中" not in text


def test_feedback_passed_checks_show_no_message_and_invalid_has_no_checks():
    text = "".join(parse(report.feedback_html(full(), lang="en")).text)
    assert "60 / 60" in text and "passed" in text and "points lost" not in text
    text = "".join(parse(report.feedback_html(broken(), lang="en")).text)
    assert "not a readable notebook" in text and "No checks of this part were run." in text


def test_feedback_rejects_unknown_language():
    with pytest.raises(ValueError, match="lang"):
        report.feedback_html(full(), lang="fr")


def test_write_feedback_files(tmp_path):
    results = [full(), partial(), broken(), hostile()]
    paths = report.write_feedback(results, tmp_path, "en")
    assert [p.name for p in paths] == [quote(r.student_id, safe="") + ".html" for r in results]
    assert {p.parent for p in paths} == {tmp_path / "feedback"}
    assert paths[1].name == "%E5%B1%B1%E7%94%B0%20%E5%A4%AA%E9%83%8E.html"
    assert 'lang="en"' in paths[3].read_text(encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "feedback").iterdir()) == sorted(p.name for p in paths)


def test_an_unchanged_page_is_not_drawn_again(tmp_path):
    """A page whose inputs are the ones stamped in it is left alone (resuming a batch redraws nothing); a change
    in any input (here the late penalty, then the language) writes it again."""
    from autograder.late import Lateness

    result = partial()
    [path] = report.write_feedback([result], tmp_path, "en")
    first = path.read_text(encoding="utf-8")
    assert first.startswith("<!DOCTYPE html>\n<!-- autograder inputs ")  # nothing may come before the doctype
    path.write_text(first.replace("</footer>", "</footer><!-- untouched -->"), encoding="utf-8")
    report.write_feedback([result], tmp_path, "en")
    assert "<!-- untouched -->" in path.read_text(encoding="utf-8")
    late = Lateness(True, 7200.0, 5.0, Message("2 時間遅れ", "2 h late"))
    report.write_feedback([result], tmp_path, "en", lateness={result.student_id: late})
    again = path.read_text(encoding="utf-8")
    assert "<!-- untouched -->" not in again and "2 h late" in again
    report.write_feedback([result], tmp_path, "ja", lateness={result.student_id: late})
    assert 'lang="ja"' in path.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------- order, names and rounding

THIRDS = {"shapes": 33.333, "net": 33.333, "device": 33.333}  # not alphabetical; three 33.33 would show 99.99


def thirds(part_titles=None):
    return SubmissionResult(student_id="s", status=GRADED, reason=None,
                            parts={"shapes": 3.3333, "net": 3.3333, "device": 3.3334}, max_parts=dict(THIRDS),
                            checks=(check("shapes.a", "shapes", 1.6667, 1.6667), check("shapes.b", "shapes", 1.6666, 1.6666),
                                    check("device.a", "device", 3.3334, 3.3334)),
                            part_titles=part_titles or {})


def headings(page):
    return re.findall(r"<h2>(.*?)</h2>", page)


def test_shown_parts_add_up_to_the_shown_total():
    earned, total, maxima, max_total = report.shown_parts(thirds())
    assert (total, max_total) == (10.0, 100.0)  # the true totals (10, 99.999...) rounded
    assert list(earned) == list(maxima) == ["shapes", "net", "device"]
    assert round(sum(earned.values()), 2) == total and round(sum(maxima.values()), 2) == max_total
    assert earned == {"shapes": 3.33, "net": 3.33, "device": 3.34}  # the largest remainder gets the cent
    assert maxima == {"shapes": 33.34, "net": 33.33, "device": 33.33}  # equal remainders: the earliest first
    page = report.feedback_html(thirds(), lang="en")
    assert headings(page) == ["Part shapes: 3.33 / 33.34", "Part net: 3.33 / 33.33", "Part device: 3.34 / 33.33"]
    assert "10 / 100" in page and "1.67 / 1.67" in page and not re.search(r"\d\.\d{3}", page)


def test_report_uses_part_names_in_its_language_and_falls_back_to_the_id():
    titles = {"shapes": Message("出力サイズの計算", "Output sizes"), "net": Message("", "The network")}
    ja = report.feedback_html(thirds(titles), lang="ja")
    assert [h.split(":")[0] for h in headings(ja)] == ["出力サイズの計算", "パート net", "パート device"]
    en = report.feedback_html(thirds(titles), lang="en")
    assert [h.split(":")[0] for h in headings(en)] == ["Output sizes", "The network", "Part device"]
    text = report.feedback_text(thirds(titles), lang="ja")
    assert "出力サイズの計算: 3.33 / 33.34" in text and "パート net: 3.33 / 33.33" in text


def test_csv_and_summary_show_two_decimals_that_add_up():
    rows = report.grades_rows([thirds()], ["shapes", "net", "device"])
    assert rows[1][1:6] == ["3.33", "3.33", "3.34", "10", "100"]
    assert "3.33    3.34     10" in report.summary_table([thirds()], ["shapes", "net", "device"])


# A real report: the released notebook with the two size functions answered, one of them wrong about ceil_mode.
# Nothing else is implemented, so nothing trains: the run takes seconds, and shapes gets 10 of its 12 checks.

@pytest.fixture(scope="module")
def real_report(tmp_path_factory, mnist_dir, assignment):
    import json
    import os
    import subprocess
    import sys

    import mutants
    from repo import REPO_ROOT
    from autograder.notebook import grade_id

    folder = tmp_path_factory.mktemp("class")
    nb = json.loads(mutants.RELEASED.read_text(encoding="utf-8"))
    answers = mutants.answers()
    for cell in nb["cells"]:
        if grade_id(cell) == "conv2d_output_size":
            cell["source"] = answers["conv2d_output_size"]
        elif grade_id(cell) == "pool2d_output_size":
            cell["source"] = answers["pool2d_output_size"].replace(
                "o = (span + (s - 1 if ceil_mode else 0)) // s + 1", "o = span // s + 1")
    mutants.write(nb, folder / "sizes_only.ipynb")
    out = tmp_path_factory.mktemp("out")
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(folder), "--assignment", "cnn_mnist", "--out", str(out), "--jobs",
                          "1", "--device", "cpu"], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={**os.environ, "MNIST_DIR": str(mnist_dir)})  # --lang ja, the default
    assert run.returncode == 0, run.stderr[-3000:]
    with (out / "grades.csv").open(encoding="utf-8-sig", newline="") as f:
        [row] = list(csv.DictReader(f))
    return (out / "feedback" / "sizes_only.html").read_text(encoding="utf-8"), row


@pytest.mark.sandbox
@pytest.mark.slow
def test_real_report_reads_in_notebook_order_with_japanese_names(real_report, assignment):
    page, _ = real_report
    names = [h.split(":")[0] for h in headings(page)][:len(assignment.points)]
    # [points] follows the notebook; the names are [part_names]'s Japanese ones, never the ids.
    assert names == [assignment.part_names[p].ja for p in assignment.points]
    assert names[0] == "出力サイズの計算"
    assert not [p for p in assignment.points if f"パート {p}" in page]


@pytest.mark.sandbox
@pytest.mark.slow
def test_real_report_rounds_to_two_decimals_and_adds_up(real_report, assignment):
    from decimal import Decimal

    page, row = real_report
    assert not re.search(r"\d\.\d{3}", page)  # no 1.6667, no 3.5714
    cells = re.findall(r'<td class="pts">(.*?)</td>', page)
    assert cells and all(re.fullmatch(r"\d+(\.\d\d?)? / \d+(\.\d\d?)?", c) for c in cells)
    assert any("." in c for c in cells)  # the checks' shares of a part are fractions, shown rounded
    parts = [Decimal(h.split(": ")[1].split(" / ")[0]) for h in headings(page)[:len(assignment.points)]]
    total = Decimal(re.search(r"<td>合計</td><td>([\d.]+) / 100</td>", page).group(1))
    assert 0 < parts[0] < 20 and sum(parts) == total == Decimal(row["total"])


def test_a_check_the_grader_only_observed_says_so_in_both_languages():
    from dataclasses import replace

    seen = replace(check("net.mode", "net", 25, 25), observed=True)
    result = replace(full(), checks=(check("shapes.conv", "shapes", 20, 20), seen, check("accuracy.test", "accuracy", 15, 15)))
    en = "".join(parse(report.feedback_html(result, lang="en")).text)
    ja = "".join(parse(report.feedback_html(result, lang="ja")).text)
    assert "check net.mode (observed during your run)" in en and "check shapes.conv (observed" not in en
    assert "net.mode の確認（実行中の観測による）" in ja
    assert "(observed during your run)" in report.feedback_text(result, lang="en")
    again = SubmissionResult.from_json(result.to_json())
    assert [c.observed for c in again.checks] == [False, True, False]
