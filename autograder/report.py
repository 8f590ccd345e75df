"""What a batch of results becomes for people: the grades CSV and class summary for TAs, one HTML page per student.

The page opens with what the student acts on (score, late penalty, each lost point in one line, the test
accuracy beside the threshold), then the pictures of their training (pictures.py), then a table per part.
The class report for the TA is classreport.py's.

Everything shown comes from the `SubmissionResult` objects only (they never hold hidden test code), and every
string taken from them is treated as hostile: student ids and messages may contain markup, spreadsheet formulas
or terminal control characters.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import os
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .files import write_atomic
from .late import ON_TIME, Lateness, final
from .results import CRASHED, GRADED, INVALID, LIMIT, STATUSES, Message, SubmissionResult, file_stem

LANGS = ("ja", "en")
DEFAULT_TITLE = ""  # the lab's name, given by whoever writes the pages (cli: the assignment's name)

# --------------------------------------------------------------------------------------------------------------
# Small shared helpers


def _num(x: float) -> str:
    """Points as people write them, two decimals at most: 20, 12.5, 3.57 (no 20.0, no 3.5714, no exponent)."""
    return f"{float(x) + 0.0:.2f}".rstrip("0").rstrip(".")  # + 0.0 turns -0.0 into 0.0


def _cents(values: list[float], total: float) -> list[int]:
    """`values` in whole cents that add up to `total` rounded to cents: each is rounded down, and the cents still
    missing go to the largest remainders (the earliest first among equals).

    Why largest remainder rather than rounding each value and showing their sum as the total: the total shown
    is then the true total rounded, the one grades.csv and the gradebook hold, and every value shown is within a
    cent of the true one. Rounding each part on its own can make the parts miss the total by a cent per part
    (three parts of 33.333 show 33.33 each, 99.99 in all, for a total of 100)."""
    exact = [float(v) * 100 for v in values]
    target = round(float(total) * 100)
    shown = [math.floor(x + 1e-6) for x in exact]  # 1e-6: 0.29 * 100 is 28.999999999999996, not below 29
    missing = target - sum(shown)
    if not 0 <= missing <= len(values):  # the values do not add up to this total: each rounded on its own
        return [round(x) for x in exact]
    for i in sorted(range(len(values)), key=lambda i: (shown[i] - exact[i], i))[:missing]:
        shown[i] += 1
    return shown


def shown_parts(result: SubmissionResult) -> tuple[dict[str, float], float, dict[str, float], float]:
    """What the reports show for a result: points per part and the total, then the maxima per part and their
    total, rounded to cents so that the parts shown add up to the total shown (see _cents)."""
    names = list(result.max_parts) + [p for p in result.parts if p not in result.max_parts]
    points = [result.parts.get(p, 0.0) for p in names]
    most = [result.max_parts.get(p, 0.0) for p in names]
    earned = dict(zip(names, (c / 100 for c in _cents(points, result.total))))
    maxima = dict(zip(names, (c / 100 for c in _cents(most, result.max_total))))
    return ({p: v for p, v in earned.items() if p in result.parts}, round(result.total, 2),
            {p: v for p, v in maxima.items() if p in result.max_parts}, round(result.max_total, 2))


# --------------------------------------------------------------------------------------------------------------
# Grades CSV

# A spreadsheet turns a cell that starts with one of these into a formula (CSV/formula injection); Japanese Excel
# also accepts the full-width forms. Such cells get a leading single quote, as OWASP recommends.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠")


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def grades_rows(results: list[SubmissionResult], parts: list[str], *,
                lateness: dict[str, Lateness] | None = None) -> list[list[str]]:
    """The grades table as strings, header first (what write_grades_csv writes).

    The late columns come last, so that a script reading the columns before them by position keeps working:
    when it was handed in (as the submission said, ISO 8601; empty when unknown), the points off for lateness
    (late.assess; 0 without a policy) and `score`, the total after that penalty: what the LMS gets. Then
    `graded_on`: the cluster worker that graded it (--cluster), empty for this machine."""
    header = ["student_id", *parts, "total", "max_total", "status", "reason", "reason_ja", "seconds",
              "submitted_at", "late_penalty", "score", "graded_on"]
    rows = [header]
    for r in results:
        shown, total, _, max_total = shown_parts(r)
        # A part the result does not have (it was not judged) stays empty rather than pretending to be 0.
        points = [_num(shown[p]) if p in shown else "" for p in parts]
        reason_en = r.reason.en if r.reason else ""
        reason_ja = r.reason.ja if r.reason else ""
        late = _lateness(lateness, r)
        # Only strings that came from results get the formula guard; the numbers are ours and must stay numbers.
        rows.append([_cell(r.student_id), *points, _num(total), _num(max_total), _cell(r.status),
                     _cell(reason_en), _cell(reason_ja), f"{r.seconds:.1f}",
                     _cell(r.submitted_at), _num(late.penalty), _num(final(r, late)), _cell(r.ran_on)])
    return rows


def _lateness(lateness: dict[str, Lateness] | None, result: SubmissionResult) -> Lateness:
    return (lateness or {}).get(result.student_id) or ON_TIME


def write_grades_csv(results: list[SubmissionResult], path: str | os.PathLike[str], parts: list[str], *,
                     bom: bool = True, lateness: dict[str, Lateness] | None = None) -> Path:
    """One row per student: id, points per part, total, max_total, status, reason (en, ja), seconds, then
    submitted_at, late_penalty and score (the total after the penalty; `lateness` by student id, from
    late.assess; a student without an entry is on time).

    Written as UTF-8 *with* a BOM by default: Excel (the TAs' tool, Japanese Windows in particular) reads a CSV
    without a BOM in the local code page (Shift_JIS) and garbles Japanese ids and reasons. Python's csv with
    encoding="utf-8-sig", pandas and LibreOffice all read the BOM correctly; pass bom=False for a tool that does
    not. Rows end in CRLF (the csv module's default, RFC 4180) and fields are quoted where needed.
    """
    buf = io.StringIO()
    csv.writer(buf).writerows(grades_rows(results, parts, lateness=lateness))
    path = Path(path)
    write_atomic(path, buf.getvalue(), encoding="utf-8-sig" if bom else "utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------
# Class summary (a terminal table)

MAX_ID_WIDTH = 24  # display columns; longer ids are cut with "…" so the table stays readable


def _char_width(c: str) -> int:
    if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
        return 0  # combining marks and zero-width joiners sit on the previous character
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def _width(s: str) -> int:
    return sum(_char_width(c) for c in s)


def _printable(s: str) -> str:
    """Control and invisible formatting characters escaped: an id must not move the cursor, recolour the TA's
    terminal or reverse the line (U+202E). Zero-width (non-)joiners stay: some scripts need them in names."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cf") and c not in "\u200c\u200d"
                   else c for c in s)


def _truncate(s: str, width: int) -> str:
    if _width(s) <= width:
        return s
    out, used = [], 0
    for c in s:
        if used + _char_width(c) > width - 1:  # keep one column for the ellipsis
            break
        out.append(c)
        used += _char_width(c)
    return "".join(out) + "…"


def _pad(s: str, width: int, right: bool = False) -> str:
    fill = " " * (width - _width(s))
    return fill + s if right else s + fill


def _id_width(ids: list[str]) -> int:
    """MAX_ID_WIDTH, or wider where ids cut to it would look the same (LMS file stems often differ only at
    their end): the narrowest width, in steps of 8 columns, at which every id shown is different."""
    width, longest = MAX_ID_WIDTH, max(map(_width, ids), default=0)
    while width < longest and len({_truncate(i, width) for i in ids}) < len(set(ids)):
        width += 8
    return width


def summary_table(results: list[SubmissionResult], parts: list[str], *,
                  lateness: dict[str, Lateness] | None = None) -> str:
    """An aligned table (student, points per part, total, status), then counts per status and mean/median total.

    With `lateness` (late.assess by student id) and anyone late, two more columns, the points off and the
    score after them, and a line for the late submissions and the mean/median score."""
    if not results:
        return "no results"
    max_parts: dict[str, float] = {}
    for r in results:  # the maxima come from the results (invalid rows carry them too); the first one wins
        max_parts.update({p: v for p, v in shown_parts(r)[2].items() if p in parts and p not in max_parts})
    max_total = max(r.max_total for r in results)
    late = {r.student_id: _lateness(lateness, r) for r in results}
    with_late = any(lt.late for lt in late.values())

    header = ["student", *parts, "total", *(["late", "score"] if with_late else []), "status"]
    maxima = ["(max)", *[_num(max_parts[p]) if p in max_parts else "" for p in parts], _num(max_total),
              *(["", _num(max_total)] if with_late else []), ""]
    shown = [shown_parts(r)[:2] for r in results]
    ids = [_printable(r.student_id) for r in results]
    id_width = _id_width(ids)
    body = []
    for r, shown_id, (earned, total) in zip(results, ids, shown):
        lt = late[r.student_id]
        penalty = (f"-{_num(lt.penalty)}" if lt.penalty > 0 else "late") if lt.late else ""
        body.append([_truncate(shown_id, id_width), *[_num(earned[p]) if p in earned else "-" for p in parts],
                     _num(total), *([penalty, _num(final(r, lt))] if with_late else []), _printable(r.status)])
    table = [header, maxima, *body]
    widths = [max(_width(row[i]) for row in table) for i in range(len(header))]
    numeric = [False, *[True] * (len(header) - 2), False]  # numbers right-aligned, text left-aligned

    def line(row):
        return "  ".join(_pad(cell, w, right) for cell, w, right in zip(row, widths, numeric)).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths), line(maxima), *map(line, body), ""]
    counts = {s: 0 for s in STATUSES}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines.append("status: " + ", ".join(f"{_printable(s)} {n}" for s, n in counts.items()))
    students = f"{len(results)} student{'s' if len(results) != 1 else ''}"
    totals = [r.total for r in results]
    mean, median = (_num(round(f(totals), 2)) for f in (statistics.mean, statistics.median))  # 2 places suffice
    lines.append(f"total: mean {mean}, median {median} of {_num(max_total)} ({students})")
    if with_late:
        scores = [final(r, late[r.student_id]) for r in results]
        mean, median = (_num(round(f(scores), 2)) for f in (statistics.mean, statistics.median))
        n_late = sum(1 for lt in late.values() if lt.late)
        n_off = sum(1 for lt in late.values() if lt.penalty > 0)
        lines.append(f"late: {n_late} ({n_off} with points off); score after the penalty: mean {mean}, "
                     f"median {median}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Student feedback (one self-contained HTML page each)

_TEXT = {
    "ja": {
        "heading": "採点結果", "student": "学籍番号", "total": "合計", "status": "状態", "reason": "理由",
        "part": "パート", "check": "確認項目", "points": "得点", "details": "詳細", "notes": "お知らせ",
        "no_checks": "このパートの確認は実行されませんでした。", "passed": "合格", "failed": "減点",
        "footer": "この結果は自動採点によるものです。疑問があれば TA に問い合わせてください。",
        "observed": "（実行中の観測による）",
        "late": "提出の遅れ", "final": "遅れの減点後の得点", "lost": "減点の内訳", "no_loss": "減点はありません。",
        "accuracy": "テスト正解率", "training": "学習の様子", "loss_curve": "学習曲線（模範解答との比較）",
        "confusion": "混同行列（テストデータ）",
    },
    "en": {
        "heading": "Grading result", "student": "Student", "total": "Total", "status": "Status", "reason": "Reason",
        "part": "Part", "check": "Check", "points": "Points", "details": "Details", "notes": "Notes",
        "no_checks": "No checks of this part were run.", "passed": "passed", "failed": "points lost",
        "footer": "This result was produced by the autograder. Ask your TA if something looks wrong.",
        "observed": " (observed during your run)",
        "late": "Late", "final": "Score after the late penalty", "lost": "Where points were lost",
        "no_loss": "No points were lost.", "accuracy": "Test accuracy", "training": "Your training",
        "loss_curve": "Loss per batch, beside the answer key's", "confusion": "Confusion matrix (test set)",
    },
}
_STATUS_TEXT = {
    "ja": {GRADED: "採点済み", LIMIT: "制限超過で停止(停止前の結果で採点)",
           CRASHED: "実行中に異常終了(終了前の結果で採点)", INVALID: "採点不能(ノートブックを実行できませんでした)"},
    "en": {GRADED: "graded", LIMIT: "stopped by a limit (judged on what ran before)",
           CRASHED: "crashed (judged on what ran before)", INVALID: "not gradable (the notebook could not be run)"},
}

# Inline, so the page works offline and from an LMS that strips external assets.
_CSS = """
body{font-family:system-ui,"Hiragino Sans","Yu Gothic",Meiryo,"Noto Sans CJK JP",sans-serif;max-width:56rem;
margin:2rem auto;padding:0 1rem;line-height:1.6;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}h3{font-size:1rem;margin:1.2rem 0 .3rem}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.pts{white-space:nowrap;text-align:right}
.msg{white-space:pre-wrap;overflow-wrap:anywhere}.ok{color:#1a7f37}.lost{color:#b3261e}
.summary td:first-child{width:13rem;font-weight:bold}footer{margin-top:2rem;color:#666;font-size:.9rem}
ul.losses{list-style:none;padding:0;margin:.5rem 0}ul.losses li{display:flex;gap:.75rem;padding:.3rem 0;
border-bottom:1px solid #eee;overflow-wrap:anywhere}ul.losses .minus{flex:0 0 3.5rem;text-align:right;
font-weight:bold;color:#b3261e;font-variant-numeric:tabular-nums}ul.losses b{font-weight:600}
ul.losses .why{color:#555}
figure{margin:.5rem 0 1.5rem}figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9rem}
.plot-missing{color:#555}
""".strip()


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _parts_in_order(result: SubmissionResult) -> list[str]:
    """The assignment's order, which is the notebook's (max_parts keeps [points]'s order), then any part that
    only the checks mention."""
    return list(result.max_parts) + [p for p in dict.fromkeys(c.part for c in result.checks)
                                     if p not in result.max_parts]


def _part_name(result: SubmissionResult, part: str, lang: str) -> str:
    """The part's name from [part_names] in this language, else "Part <id>"."""
    title = result.part_titles.get(part)
    return (title.get(lang) if title else "") or f"{_TEXT[lang]['part']} {part}"


def _title(check, lang: str) -> str:
    """A check's title, saying so when the grader could only observe it inside the run (not recompute it)."""
    return check.title.get(lang) + (_TEXT[lang]["observed"] if check.observed else "")


# --------------------------------------------------------------------------------------------------------------
# The summary at the top of the feedback: what the student reads first and acts on

MAX_REASON = 160  # characters of a lost point's reason in its one line; the whole message is in the part's table


@dataclass(frozen=True)
class Loss:
    """One line of "where points were lost": what lost them, how many, and why in a few words."""

    title: str
    points: float
    reason: str


def _first_line(message: Message | None, lang: str) -> str:
    """The first non-empty line of a message, cut to MAX_REASON characters: the check's messages put what
    went wrong first ("expected …", "not implemented"), the detail after."""
    text = message.get(lang) if message else ""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= MAX_REASON else line[:MAX_REASON - 1] + "…"


def lost_points(result: SubmissionResult, lang: str) -> list[Loss]:
    """Each check that lost points, and each part that lost points without a check to say why (a notebook
    that could not run), most points first; among equals, in the page's order. Only the checks' own titles
    and messages are used: nothing here says more than the tables below."""
    losses = []
    for part in _parts_in_order(result):
        checks = [c for c in result.checks if c.part == part]
        losses += [Loss(_title(c, lang), c.max_points - c.points, _first_line(c.message, lang))
                   for c in checks if not c.passed]
        missing = result.max_parts.get(part, 0.0) - result.parts.get(part, 0.0)
        if not checks and missing > 0.005:
            why = _first_line(result.reason, lang) or _TEXT[lang]["no_checks"]
            losses.append(Loss(_part_name(result, part, lang), missing, why))
    return sorted(losses, key=lambda loss: -round(loss.points, 2))  # stable: equals keep the page's order


def _percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def accuracy_line(result: SubmissionResult, lang: str) -> str | None:
    """The test accuracy the judge measured, next to the lab's threshold for full points; None when the
    accuracy was not measured."""
    m = result.measures
    if m is None or m.accuracy is None or not math.isfinite(m.accuracy):
        return None
    reached = _percent(m.accuracy)
    if m.threshold is None:
        return reached
    thr = _percent(m.threshold)
    if m.accuracy >= m.threshold:
        return (f"{reached}（満点の基準 {thr} 以上: 達成）" if lang == "ja"
                else f"{reached} (full points at {thr} or above: reached)")
    gap = f"{100 * (m.threshold - m.accuracy):.2f}"
    return (f"{reached}（満点の基準 {thr} 以上まで、あと {gap} ポイント）" if lang == "ja"
            else f"{reached} (full points at {thr} or above: {gap} percentage points short)")


def _summary_rows(result: SubmissionResult, lang: str, lateness: Lateness | None) -> list[tuple[str, str]]:
    """(label, value) pairs of the summary table, in order; values unescaped (the caller escapes)."""
    t = _TEXT[lang]
    _, total, _, max_total = shown_parts(result)
    rows = [(t["student"], result.student_id), (t["total"], f"{_num(total)} / {_num(max_total)}")]
    if lateness is not None and lateness.late:
        rows.append((t["late"], lateness.message.get(lang) if lateness.message else f"-{_num(lateness.penalty)}"))
        if lateness.penalty > 0:
            rows.append((t["final"], f"{_num(final(result, lateness))} / {_num(max_total)}"))
    rows.append((t["status"], _STATUS_TEXT[lang].get(result.status, result.status)))
    if result.reason:
        rows.append((t["reason"], result.reason.get(lang)))
    accuracy = accuracy_line(result, lang)
    if accuracy is not None:
        rows.append((t["accuracy"], accuracy))
    return rows


def _pictures(result: SubmissionResult, lang: str, reference_losses: Sequence[float] | None) -> list[str]:
    """The loss curve and the confusion matrix, where the judge measured them (matplotlib is imported only
    when there is something to draw)."""
    m = result.measures
    if m is None or not (m.losses or m.confusion):
        return []
    from . import pictures

    t = _TEXT[lang]
    out = [f'<h2 class="section">{t["training"]}</h2>']
    if m.losses:
        out += [f"<h3>{t['loss_curve']}</h3>", pictures.loss_curve(m.losses, reference_losses, lang)]
    if m.confusion:
        out += [f"<h3>{t['confusion']}</h3>", pictures.confusion_matrix(m.confusion, lang)]
    return out


# --------------------------------------------------------------------------------------------------------------
# The page


def feedback_html(result: SubmissionResult, *, lang: str = "ja", assignment_title: str = DEFAULT_TITLE,
                  lateness: Lateness | None = None, reference_losses: Sequence[float] | None = None) -> str:
    """One student's feedback page, in Japanese (default) or English; every value from the result is escaped.

    From the top: the summary (score, the late penalty and the score after it, status, the test accuracy
    beside the threshold), each lost point in one line, most valuable first; the pictures of the training
    (the loss per batch beside `reference_losses`, the answer key's under the same budget, and the confusion
    matrix) where the judge measured them; then one table per part and the notes. `lateness` is
    late.assess's for this result (None: nothing to say about lateness)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, not {lang!r}")
    t = _TEXT[lang]
    earned, _, maxima, _ = shown_parts(result)
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{lang}">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(assignment_title + ' — ' if assignment_title else '')}{_e(result.student_id)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{_e(assignment_title + ': ' if assignment_title else '')}{t['heading']}</h1>",
        '<table class="summary">',
    ]
    for label, value in _summary_rows(result, lang, lateness):
        cls = ' class="msg"' if label in (t["reason"], t["late"]) else ""
        out.append(f"<tr><td>{_e(label)}</td><td{cls}>{_e(value)}</td></tr>")
    out.append("</table>")

    losses = lost_points(result, lang)
    if losses:
        out.append(f'<h2 class="section">{t["lost"]}</h2><ul class="losses">')
        for loss in losses:
            why = f' <span class="why">— {_e(loss.reason)}</span>' if loss.reason else ""
            out.append(f'<li><span class="minus">-{_e(_num(loss.points))}</span><span><b>{_e(loss.title)}</b>{why}'
                       "</span></li>")
        out.append("</ul>")
    elif result.status == GRADED:
        out.append(f"<p>{t['no_loss']}</p>")
    out += _pictures(result, lang, reference_losses)

    for part in _parts_in_order(result):
        most = maxima.get(part)
        score = _num(earned.get(part, 0.0)) + (f" / {_num(most)}" if most is not None else "")
        out.append(f"<h2>{_e(_part_name(result, part, lang))}: {_e(score)}</h2>")
        checks = [c for c in result.checks if c.part == part]
        if not checks:
            out.append(f"<p>{t['no_checks']}</p>")
            continue
        out.append(f"<table><tr><th>{t['check']}</th><th>{t['points']}</th><th>{t['details']}</th></tr>")
        for c in checks:
            mark = (f'<span class="ok">✓ {t["passed"]}</span>' if c.passed
                    else f'<span class="lost">✗ {t["failed"]}</span>')
            # The message (expected / observed / hint) only where points were lost: a pass needs no explanation.
            detail = mark + "<br>" + _e(c.message.get(lang)) if c.message and not c.passed else mark
            out.append(f'<tr><td>{_e(_title(c, lang))}</td>'
                       f'<td class="pts">{_e(_num(c.points))} / {_e(_num(c.max_points))}</td>'
                       f'<td class="msg">{detail}</td></tr>')
        out.append("</table>")

    if result.notes:
        out.append(f"<h2>{t['notes']}</h2><ul>")
        out += [f'<li class="msg">{_e(n.get(lang))}</li>' for n in result.notes]
        out.append("</ul>")
    out += [f"<footer>{t['footer']}</footer>", "</body>", "</html>", ""]
    return "\n".join(out)


def feedback_path(folder: str | os.PathLike[str], student_id: str) -> Path:
    """feedback/<id>.html under the output folder, the id encoded exactly as ResultStore.path does."""
    return Path(folder) / "feedback" / f"{file_stem(student_id)}.html"


def write_feedback(results: list[SubmissionResult], folder: str | os.PathLike[str], lang: str = "ja", *,
                   assignment_title: str = DEFAULT_TITLE, lateness: dict[str, Lateness] | None = None,
                   reference_losses: Sequence[float] | None = None) -> list[Path]:
    """Write every student's page to <folder>/feedback/ (atomically, one by one); return the paths.
    `lateness` by student id (late.assess); `reference_losses`: the answer key's curve (grade.reference_losses).

    A page is a function of its inputs, and its pictures take most of a second to draw: a page whose inputs
    (the result, its lateness, the curve, the language, the title, and the code that draws it) are the ones
    recorded in it is left as it is, so that resuming or regrading one student does not redraw the class."""
    paths = []
    code = _drawing_code_digest()
    for r in results:
        path = feedback_path(folder, r.student_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        late = (lateness or {}).get(r.student_id)
        key = hashlib.sha256(json.dumps([code, r.to_json(), repr(late), list(reference_losses or ()), lang,
                                         assignment_title]).encode()).hexdigest()
        stamp = f"<!-- autograder inputs {key} -->"
        if not _page_has(path, stamp):
            page = feedback_html(r, lang=lang, assignment_title=assignment_title, lateness=late,
                                 reference_losses=reference_losses)
            doctype, rest = page.split("\n", 1)  # the stamp goes after the doctype: nothing may precede that
            write_atomic(path, f"{doctype}\n{stamp}\n{rest}")
        paths.append(path)
    return paths


def _page_has(path: Path, stamp: str) -> bool:
    try:
        with path.open(encoding="utf-8") as f:
            f.readline()
            return f.readline().rstrip("\n") == stamp
    except (OSError, UnicodeDecodeError):
        return False


def _drawing_code_digest() -> str:
    """This kit's version and the source of the modules that draw a page: a change in either redraws it."""
    from . import __version__, pictures

    digest = hashlib.sha256(__version__.encode())
    for module in (__file__, pictures.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()


def feedback_text(result: SubmissionResult, *, lang: str = "ja", lateness: Lateness | None = None) -> str:
    """The same report as the HTML page, as plain text for a terminal (autograder validate): the summary, the
    lost points most valuable first, then each part's checks; no pictures."""
    t = _TEXT[lang]
    earned, total, maxima, max_total = shown_parts(result)
    lines = [f"{t['total']}: {_num(total)} / {_num(max_total)}   "
             f"{t['status']}: {_STATUS_TEXT[lang].get(result.status, result.status)}"]
    if lateness is not None and lateness.late:
        if lateness.message:
            lines.append(f"{t['late']}: {_printable(lateness.message.get(lang))}")
        if lateness.penalty > 0:
            lines.append(f"{t['final']}: {_num(final(result, lateness))} / {_num(max_total)}")
    if result.reason:
        lines.append(f"{t['reason']}: {_printable(result.reason.get(lang))}")
    accuracy = accuracy_line(result, lang)
    if accuracy is not None:
        lines.append(f"{t['accuracy']}: {accuracy}")
    losses = lost_points(result, lang)
    if losses:
        lines.append(f"\n{t['lost']}:")
        width = max(len(_num(loss.points)) for loss in losses) + 1
        lines += [f"  {('-' + _num(loss.points)).rjust(width)}  {_printable(loss.title)}"
                  + (f" — {_printable(loss.reason)}" if loss.reason else "") for loss in losses]
    for part, most in maxima.items():
        lines.append(f"\n{_printable(_part_name(result, part, lang))}: {_num(earned.get(part, 0.0))} / {_num(most)}")
        for c in (c for c in result.checks if c.part == part):
            mark = "✓" if c.passed else "✗"
            lines.append(f"  {mark} {_printable(_title(c, lang))}  ({_num(c.points)} / {_num(c.max_points)})")
            if c.message and not c.passed:  # line by line: _printable would show a newline as \n
                lines += [f"      {_printable(line)}" for line in c.message.get(lang).splitlines()]
    if result.notes:
        lines.append(f"\n{t['notes']}:")
        lines += [f"  - {_printable(n.get(lang))}" for n in result.notes]
    return "\n".join(lines)
