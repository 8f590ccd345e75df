"""The pictures (pictures.py) and the feedback page that shows them: its summary at the top (score, late
penalty, lost points most valuable first, accuracy beside the threshold), its pictures, and a render in
headless Chromium when one is installed."""

from __future__ import annotations

import base64
import math
import re
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from autograder import pictures, report
from autograder.config import Late
from autograder.late import assess
from autograder.results import CRASHED, GRADED, CheckResult, Measures, Message, SubmissionResult, invalid

from pages import parse

MAX = {"shapes": 20.0, "net": 25.0, "training": 35.0}
HOSTILE = "<script>alert(1)</script>"
MNIST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def curve(n=300, start=2.3, end=0.1):
    return tuple(end + (start - end) * math.exp(-i / (n / 6)) for i in range(n))


def confusion(mistake=(4, 9, 37)):
    """MNIST's test counts, all right but `mistake`: (true, predicted, count)."""
    true, pred, n = mistake
    rows = [[count if i == j else 0 for j in range(10)] for i, count in enumerate(MNIST_COUNTS)]
    rows[true][true] -= n
    rows[true][pred] += n
    rows[3][5] += 2  # a smaller mistake elsewhere
    rows[3][3] -= 2
    return tuple(map(tuple, rows))


def check(name, part, points, max_points, message=None, title=None):
    return CheckResult(name=name, part=part, title=title or Message(f"{name} の確認", f"check {name}"),
                       points=points, max_points=max_points, message=message)


def student(measures=None, submitted_at="", **kw):
    """Loses 1 on shapes.stride, 7 on net.forward (the most valuable) and 3.5 on training.accuracy."""
    checks = (check("shapes.stride", "shapes", 9, 10, Message("期待値: (13, 13)\n実際: (14, 14)",
                                                              "expected (13, 13)\nobserved (14, 14)")),
              check("shapes.pool", "shapes", 10, 10),
              check("net.forward", "net", 18, 25, Message("順伝播の結果が違います", "the forward pass is wrong")),
              check("training.accuracy", "training", 31.5, 35,
                    Message("テスト正解率 0.9310 は満点の基準 0.94 に届きませんでした。\n詳細",
                            "test accuracy 0.9310 is below 0.94, needed for full points.\ndetail")))
    return SubmissionResult(student_id="s001", status=GRADED, reason=None,
                            parts={"shapes": 19.0, "net": 18.0, "training": 31.5}, max_parts=dict(MAX),
                            checks=checks, seconds=12.0, submitted_at=submitted_at, measures=measures, **kw)


def measured(accuracy=0.931, threshold=0.94, losses=None, matrix=None):
    return Measures(accuracy=accuracy, threshold=threshold, losses=curve() if losses is None else losses,
                    confusion=confusion() if matrix is None else matrix)




def images(page) -> list[str]:
    """The SVG documents of the page's <img> tags; fails on any picture that is not an inline data: SVG."""
    found = []
    for tag, attrs in parse(page).tags:
        if tag == "img":
            src = attrs["src"]
            assert src.startswith("data:image/svg+xml;base64,"), src[:60]
            found.append(base64.b64decode(src.split(",", 1)[1]).decode("utf-8"))
            assert attrs.get("alt") and int(attrs["width"]) > 100 and int(attrs["height"]) > 100
    return found


def text(page) -> str:
    return "".join(parse(page).text)


# ------------------------------------------------------------------------------------------------ the pictures

def test_loss_curve_is_one_self_contained_vector_picture():
    fragment = pictures.loss_curve(curve(), curve(start=2.31, end=0.05), "en")
    [svg] = images(fragment)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "</svg>" in svg
    # Nothing that a viewer would fetch: the only addresses left are the xmlns names.
    assert set(re.findall(r'"(https?://[^"]*)"', svg)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert "<script" not in svg and "<image" not in svg and "<!DOCTYPE" not in svg
    assert "<text" not in svg  # text drawn as glyph outlines: the font travels with the picture
    assert "<path" in svg and "Training loss per batch" in text(fragment)
    assert "answer key's from 2.31" in parse(fragment).tags[1][1]["alt"]


def test_pictures_are_deterministic():
    assert pictures.loss_curve(curve(), curve(), "en") == pictures.loss_curve(curve(), curve(), "en")
    assert pictures.confusion_matrix(confusion(), "ja") == pictures.confusion_matrix(confusion(), "ja")
    assert "Date" not in images(pictures.loss_curve(curve(), (), "en"))[0]


def test_loss_curve_without_data_says_so():
    nothing = pictures.loss_curve((), curve(), "en")
    assert not images(nothing) and "No training loss was recorded" in text(nothing)
    assert "学習の損失が記録されていない" in text(pictures.loss_curve([], None, "ja"))
    assert not images(pictures.loss_curve([math.nan, math.inf], curve(), "en"))
    alone = pictures.loss_curve(curve(), (), "en")
    assert len(images(alone)) == 1 and "The answer key's curve is not available." in text(alone)
    diverged = pictures.loss_curve([2.3, 5.0, math.inf, math.nan, 1e3], curve(), "en")
    assert len(images(diverged)) == 1 and "2 batches had a loss that is not a finite number" in text(diverged)
    assert "means of consecutive batches" in text(pictures.loss_curve(curve(1000), curve(1000), "en"))


def test_moving_average_is_centred_and_skips_nan():
    assert pictures.moving_average([1.0, 2.0, 3.0, 4.0, 5.0], 3) == [1.5, 2.0, 3.0, 4.0, 4.5]
    assert pictures.moving_average([1.0, math.nan, 3.0], 3) == [1.0, 2.0, 3.0]
    assert math.isnan(pictures.moving_average([math.nan, math.nan], 1)[0])


def test_confusion_matrix_names_the_most_frequent_mistake():
    fragment = pictures.confusion_matrix(confusion((4, 9, 37)), "en")
    assert len(images(fragment)) == 1
    caption = text(fragment)
    assert "Most frequent mistake: a true 4 predicted as 9 (37 images)." in caption
    assert f"Weakest class: 4 ({100 * (982 - 37) / 982:.1f}% right)." in caption
    assert "実際は 4 を 9 と予測（37 枚）" in text(pictures.confusion_matrix(confusion((4, 9, 37)), "ja"))


@pytest.mark.parametrize("matrix", [
    (), ((1, 2), (3,)), ((1, 2, 3), (4, 5, 6)), ((-1, 2), (3, 4)), ((0, 0), (0, 0)), ((1.5, 2), (3, 4)),
    (("a", 2), (3, 4)), tuple(tuple([1] * 101) for _ in range(101)), None,
])
def test_confusion_matrix_refuses_what_is_not_a_square_of_counts(matrix):
    fragment = pictures.confusion_matrix(matrix, "en")
    assert not images(fragment) and "There is no confusion matrix" in text(fragment)


def test_class_pictures_draw_or_say_why_not():
    assert len(images(pictures.score_histogram([10, 55.5, 100, 100], 100, "en"))) == 1
    assert "No scores." in text(pictures.score_histogram([], 100, "en"))
    drawn = pictures.accuracy_histogram([0.95, 0.97, 0.2], 0.94, "en")
    assert len(images(drawn)) == 1 and "threshold for full points, 94.00%" in text(drawn)
    assert "No submission had its test accuracy measured." in text(pictures.accuracy_histogram([], 0.9, "en"))
    bars = pictures.pass_rate_bars([(Message("ストライド", "stride"), 0.25), ("forward", 0.9)], "en")
    assert len(images(bars)) == 1 and "lowest first" in text(bars)
    assert not images(pictures.pass_rate_bars([], "en"))


def test_unknown_language_is_refused():
    with pytest.raises(ValueError, match="lang"):
        pictures.loss_curve(curve(), (), "fr")


def glyph_fonts(svg: str) -> set[str]:
    """The fonts whose glyph outlines a matplotlib SVG holds (its <path id="<font>-<glyph>"> definitions)."""
    return set(re.findall(r'<path id="([A-Za-z][\w-]*?)-[0-9a-f]+"', svg))


def test_japanese_labels_need_a_japanese_font(monkeypatch):
    monkeypatch.setattr(pictures, "cjk_font", lambda: None)
    assert pictures.label_lang("ja") == "en"  # English labels rather than boxes where characters should be
    fragment = pictures.loss_curve(curve(), curve(), "ja")
    assert glyph_fonts(images(fragment)[0]) == {"DejaVuSans"}
    assert "ミニバッチごとの学習の損失" in text(fragment)  # the caption stays in the page's language


@pytest.mark.skipif(pictures.cjk_font() is None, reason="no CJK font installed (apt-get install fonts-noto-cjk)")
def test_japanese_labels_are_drawn_with_the_cjk_font():
    assert pictures.label_lang("ja") == "ja"
    fonts = glyph_fonts(images(pictures.loss_curve(curve(), curve(), "ja"))[0])
    assert fonts and fonts != {"DejaVuSans"}  # the CJK font's outlines are in the picture
    assert glyph_fonts(images(pictures.loss_curve(curve(), curve(), "en"))[0]) == {"DejaVuSans"}


def test_importing_the_reports_does_not_import_matplotlib():
    code = ("import sys, autograder.report, autograder.classreport, autograder.pictures; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------ the feedback page's summary

def test_feedback_summary_lists_lost_points_most_valuable_first():
    page = report.feedback_html(student(), lang="en")
    losses = re.findall(r'<li><span class="minus">(-[\d.]+)</span><span><b>(.*?)</b>', page)
    assert losses == [("-7", "check net.forward"), ("-3.5", "check training.accuracy"), ("-1", "check shapes.stride")]
    body = text(page)
    # One line each: the first line of the message, not the rest (the part's table below has it whole).
    assert "check training.accuracy — test accuracy 0.9310 is below 0.94, needed for full points." in body
    assert "check shapes.stride — expected (13, 13)" in body
    summary = page.index('class="losses"')
    assert summary < page.index("<h2>Part shapes")  # at the top, before the parts' tables
    assert "detail" in page[page.index("<h2>Part training"):]  # the whole message stays in the table
    assert [loss.points for loss in report.lost_points(student(), "ja")] == [7, 3.5, 1]


def test_feedback_summary_when_nothing_or_everything_was_lost():
    full = replace(student(), parts=dict(MAX), checks=(check("shapes.pool", "shapes", 20, 20),))
    assert "No points were lost." in text(report.feedback_html(full, lang="en"))
    broken = invalid("s002", Message("ノートブックを読めません", "not a readable notebook"), MAX)
    lines = [(loss.title, loss.points, loss.reason) for loss in report.lost_points(broken, "en")]
    assert lines == [("Part training", 35, "not a readable notebook"), ("Part net", 25, "not a readable notebook"),
                     ("Part shapes", 20, "not a readable notebook")]


def test_feedback_shows_the_late_penalty_and_the_score_after_it():
    late = Late(due="2025-12-07T23:59:00+09:00", penalty="per_day", points=5, cap=20)
    result = student(submitted_at="2025-12-09T02:10:00+09:00")  # 26 h late: two started days
    lateness = assess(late, result)
    page = report.feedback_html(result, lang="en", lateness=lateness)
    rows = re.findall(r"<tr><td>(.*?)</td><td[^>]*>(.*?)</td></tr>", page)
    assert rows[:4] == [("Student", "s001"), ("Total", "68.5 / 80"),
                        ("Late", "handed in 26.2 h after the due date; 5 points off per started day late, at most "
                                 "20: -10 points."),
                        ("Score after the late penalty", "58.5 / 80")]
    ja = text(report.feedback_html(result, lang="ja", lateness=lateness))
    assert "遅れの減点後の得点58.5 / 80" in ja and "-10 点" in ja
    terminal = report.feedback_text(result, lang="en", lateness=lateness)
    assert "Late: handed in 26.2 h" in terminal and "Score after the late penalty: 58.5 / 80" in terminal
    on_time = assess(late, student(submitted_at="2025-12-07T20:00:00+09:00"))
    assert "Late" not in text(report.feedback_html(student(), lang="en", lateness=on_time))
    free = assess(Late(due=late.due), result)  # penalty "none": lateness is said, nothing is taken off
    page = text(report.feedback_html(result, lang="en", lateness=free))
    assert "(no points off)" in page and "Score after the late penalty" not in page


def test_feedback_shows_the_accuracy_next_to_the_threshold():
    below = text(report.feedback_html(student(measured(0.931, 0.94)), lang="en"))
    assert "Test accuracy93.10% (full points at 94.00% or above: 0.90 percentage points short)" in below
    above = text(report.feedback_html(student(measured(0.9712, 0.94)), lang="ja"))
    assert "テスト正解率97.12%（満点の基準 94.00% 以上: 達成）" in above
    assert report.accuracy_line(student(measured(0.95, None)), "en") == "95.00%"
    assert report.accuracy_line(student(Measures()), "en") is None
    assert "Test accuracy" not in text(report.feedback_html(student(), lang="en"))
    terminal = report.feedback_text(student(measured(0.931, 0.94)), lang="en")
    assert "Test accuracy: 93.10% (full points at 94.00% or above" in terminal
    assert ("Where points were lost:\n    -7  check net.forward — the forward pass is wrong\n"
            "  -3.5  check training.accuracy — test accuracy 0.9310 is below 0.94, needed for full points.\n"
            "    -1  check shapes.stride — expected (13, 13)\n") in terminal
    assert "      expected (13, 13)\n      observed (14, 14)\n" in terminal  # a message's lines, each indented


def test_feedback_page_holds_its_two_pictures_after_the_summary():
    page = report.feedback_html(student(measured()), lang="ja", reference_losses=curve(start=2.31, end=0.05))
    svgs = images(page)
    assert len(svgs) == 2 and all("<svg" in s for s in svgs)
    assert not any(t in ("link", "script") for t, _ in parse(page).tags)  # still self-contained
    first_img = page.index("<img")
    assert page.index('class="losses"') < first_img < page.index("<h2>パート shapes")
    assert "学習曲線（模範解答との比較）" in text(page) and "混同行列（テストデータ）" in text(page)


@pytest.mark.parametrize("measures, count", [
    (None, 0), (Measures(), 0), (Measures(accuracy=0.9, threshold=0.94), 0),
    (Measures(losses=curve()), 1), (Measures(confusion=confusion()), 1),
    (Measures(losses=(), confusion=((1, 2), (3,))), 0),  # not a matrix of counts: a sentence instead
])
def test_feedback_draws_only_what_was_measured(measures, count):
    page = report.feedback_html(student(measures), lang="en", reference_losses=curve())
    assert len(images(page)) == count


def test_feedback_summary_escapes_hostile_values():
    lost = Message(f"{HOSTILE}\nsecond", f"{HOSTILE} & \"q\"\nsecond")
    result = SubmissionResult(student_id=HOSTILE, status=CRASHED, reason=Message(HOSTILE, HOSTILE),
                              parts={"shapes": 0.0}, max_parts={"shapes": 20.0},
                              checks=(check("x", "shapes", 0, 20, lost, Message(HOSTILE, HOSTILE)),),
                              submitted_at=HOSTILE, late_mark=True, measures=measured())
    lateness = assess(Late(due="2025-12-07T23:59:00+09:00", penalty="zero"), result)
    for lang in ("ja", "en"):
        page = report.feedback_html(result, lang=lang, lateness=lateness, reference_losses=curve())
        assert "<script" not in page.lower() and "&lt;script&gt;" in page
        parsed = parse(page)
        assert "script" not in {t for t, _ in parsed.tags}
        assert f"{HOSTILE} — {HOSTILE}" in "".join(parsed.text)  # the lost line: title — reason, as text
    assert "\x1b" not in report.feedback_text(replace(result, checks=(check("y", "shapes", 0, 20, Message(
        "a\x1b[2Jb", "a\x1b[2Jb")),)), lang="en")


def test_grades_csv_holds_the_late_penalty_and_the_score_after_it(tmp_path):
    import csv

    late = Late(due="2025-12-07T23:59:00+09:00", penalty="per_hour", points=2, cap=7)
    on_time, late_one = student(submitted_at="2025-12-07T23:00:00+09:00"), replace(
        student(submitted_at="2025-12-08T02:30:00+09:00"), student_id="s002")
    marked = replace(student(), student_id="=s003", late_mark=True)  # the LMS said late, not by how much
    lateness = {r.student_id: assess(late, r) for r in (on_time, late_one, marked)}
    path = report.write_grades_csv([on_time, late_one, marked], tmp_path / "g.csv", list(MAX), lateness=lateness)
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["student_id"], r["total"], r["submitted_at"], r["late_penalty"], r["score"]) for r in rows] == [
        ("s001", "68.5", "2025-12-07T23:00:00+09:00", "0", "68.5"),
        ("s002", "68.5", "2025-12-08T02:30:00+09:00", "6", "62.5"),  # three started hours
        ("'=s003", "68.5", "", "2", "66.5"),  # one started hour: the least that is certainly owed
    ]


# --------------------------------------------------------------------------------------------- headless Chromium

def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (CI installs Debian's chromium)")
def test_feedback_and_class_report_render_in_headless_chromium(tmp_path):
    from PIL import Image

    from autograder import classreport

    pages = {
        "feedback": report.feedback_html(student(measured()), lang="ja", reference_losses=curve()),
        "class": classreport.class_report_html([student(measured()), replace(student(measured(0.97)),
                                                                            student_id="s002")], "CNN"),
    }
    for name, page in pages.items():
        html_path, png = tmp_path / f"{name}.html", tmp_path / f"{name}.png"
        html_path.write_text(page, encoding="utf-8")
        subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp_path / 'profile'}", "--force-device-scale-factor=1",
                        "--window-size=1000,2400", f"--screenshot={png}", html_path.as_uri()],
                       check=True, capture_output=True, timeout=120)
        with Image.open(png) as image:
            rgb = image.convert("RGB")
            colours = rgb.getcolors(maxcolors=1 << 20) or []
            inked = sum(n for n, c in colours if c != (255, 255, 255))
            # Not blank: text and pictures cover a good part of the page, in many colours (anti-aliased text);
            # and the pictures were drawn: the page's own colours are greys, the figures' are saturated.
            assert inked > 0.03 * rgb.width * rgb.height, (name, inked)
            assert len(colours) > 200, name
            assert sum(n for n, c in colours if max(c) - min(c) > 80) > 5000, name
