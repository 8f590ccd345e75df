"""What a batch of results becomes for people: the grades CSV and class summary for TAs, one HTML page per student.

Everything shown comes from the `SubmissionResult` objects only (they never hold hidden test code), and every
string taken from them is treated as hostile: student ids and messages may contain markup, spreadsheet formulas
or terminal control characters.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import statistics
import unicodedata
from pathlib import Path

from .files import write_atomic
from .results import CRASHED, GRADED, INVALID, LIMIT, STATUSES, SubmissionResult, file_stem

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


def grades_rows(results: list[SubmissionResult], parts: list[str]) -> list[list[str]]:
    """The grades table as strings, header first (what write_grades_csv writes)."""
    header = ["student_id", *parts, "total", "max_total", "status", "reason", "reason_ja", "seconds"]
    rows = [header]
    for r in results:
        shown, total, _, max_total = shown_parts(r)
        # A part the result does not have (it was not judged) stays empty rather than pretending to be 0.
        points = [_num(shown[p]) if p in shown else "" for p in parts]
        reason_en = r.reason.en if r.reason else ""
        reason_ja = r.reason.ja if r.reason else ""
        # Only strings that came from results get the formula guard; the numbers are ours and must stay numbers.
        rows.append([_cell(r.student_id), *points, _num(total), _num(max_total), _cell(r.status),
                     _cell(reason_en), _cell(reason_ja), f"{r.seconds:.1f}"])
    return rows


def write_grades_csv(results: list[SubmissionResult], path: str | os.PathLike[str], parts: list[str], *,
                     bom: bool = True) -> Path:
    """One row per student: id, points per part, total, max_total, status, reason (en, ja), seconds.

    Written as UTF-8 *with* a BOM by default: Excel (the TAs' tool, Japanese Windows in particular) reads a CSV
    without a BOM in the local code page (Shift_JIS) and garbles Japanese ids and reasons. Python's csv with
    encoding="utf-8-sig", pandas and LibreOffice all read the BOM correctly; pass bom=False for a tool that does
    not. Rows end in CRLF (the csv module's default, RFC 4180) and fields are quoted where needed.
    """
    buf = io.StringIO()
    csv.writer(buf).writerows(grades_rows(results, parts))
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


def summary_table(results: list[SubmissionResult], parts: list[str]) -> str:
    """An aligned table (student, points per part, total, status), then counts per status and mean/median total."""
    if not results:
        return "no results"
    max_parts: dict[str, float] = {}
    for r in results:  # the maxima come from the results (invalid rows carry them too); the first one wins
        max_parts.update({p: v for p, v in shown_parts(r)[2].items() if p in parts and p not in max_parts})
    max_total = max(r.max_total for r in results)

    header = ["student", *parts, "total", "status"]
    maxima = ["(max)", *[_num(max_parts[p]) if p in max_parts else "" for p in parts], _num(max_total), ""]
    shown = [shown_parts(r)[:2] for r in results]
    body = [[_truncate(_printable(r.student_id), MAX_ID_WIDTH),
             *[_num(earned[p]) if p in earned else "-" for p in parts], _num(total), _printable(r.status)]
            for r, (earned, total) in zip(results, shown)]
    table = [header, maxima, *body]
    widths = [max(_width(row[i]) for row in table) for i in range(len(header))]
    numeric = [False, *[True] * len(parts), True, False]  # numbers right-aligned, text left-aligned

    def line(row):
        return "  ".join(_pad(cell, w, right) for cell, w, right in zip(row, widths, numeric)).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths), line(maxima), *map(line, body), ""]
    counts = {s: 0 for s in STATUSES}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines.append("status: " + ", ".join(f"{_printable(s)} {n}" for s, n in counts.items()))
    totals = [r.total for r in results]
    mean, median = (_num(round(f(totals), 2)) for f in (statistics.mean, statistics.median))  # 2 places suffice
    lines.append(f"total: mean {mean}, median {median} "
                 f"of {_num(max_total)} ({len(results)} student{'s' if len(results) != 1 else ''})")
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
    },
    "en": {
        "heading": "Grading result", "student": "Student", "total": "Total", "status": "Status", "reason": "Reason",
        "part": "Part", "check": "Check", "points": "Points", "details": "Details", "notes": "Notes",
        "no_checks": "No checks of this part were run.", "passed": "passed", "failed": "points lost",
        "footer": "This result was produced by the autograder. Ask your TA if something looks wrong.",
        "observed": " (observed during your run)",
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
body{font-family:system-ui,"Hiragino Sans","Yu Gothic",Meiryo,sans-serif;max-width:56rem;margin:2rem auto;
padding:0 1rem;line-height:1.6;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.pts{white-space:nowrap;text-align:right}
.msg{white-space:pre-wrap;overflow-wrap:anywhere}.ok{color:#1a7f37}.lost{color:#b3261e}
.summary td:first-child{width:10rem;font-weight:bold}footer{margin-top:2rem;color:#666;font-size:.9rem}
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


def feedback_html(result: SubmissionResult, *, lang: str = "ja", assignment_title: str = DEFAULT_TITLE) -> str:
    """One student's feedback page, in Japanese (default) or English; every value from the result is escaped."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, not {lang!r}")
    t = _TEXT[lang]
    status = _STATUS_TEXT[lang].get(result.status, result.status)
    earned, total, maxima, max_total = shown_parts(result)
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
        f"<tr><td>{t['student']}</td><td>{_e(result.student_id)}</td></tr>",
        f"<tr><td>{t['total']}</td><td>{_e(_num(total))} / {_e(_num(max_total))}</td></tr>",
        f"<tr><td>{t['status']}</td><td>{_e(status)}</td></tr>",
    ]
    if result.reason:
        out.append(f'<tr><td>{t["reason"]}</td><td class="msg">{_e(result.reason.get(lang))}</td></tr>')
    out.append("</table>")

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
                   assignment_title: str = DEFAULT_TITLE) -> list[Path]:
    """Write every student's page to <folder>/feedback/ (atomically, one by one); return the paths."""
    paths = []
    for r in results:
        path = feedback_path(folder, r.student_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, feedback_html(r, lang=lang, assignment_title=assignment_title))
        paths.append(path)
    return paths


def feedback_text(result: SubmissionResult, *, lang: str = "ja") -> str:
    """The same report as the HTML page, as plain text for a terminal (autograder validate)."""
    t = _TEXT[lang]
    earned, total, maxima, max_total = shown_parts(result)
    lines = [f"{t['total']}: {_num(total)} / {_num(max_total)}   "
             f"{t['status']}: {_STATUS_TEXT[lang].get(result.status, result.status)}"]
    if result.reason:
        lines.append(f"{t['reason']}: {_printable(result.reason.get(lang))}")
    for part, most in maxima.items():
        lines.append(f"\n{_printable(_part_name(result, part, lang))}: {_num(earned.get(part, 0.0))} / {_num(most)}")
        for c in (c for c in result.checks if c.part == part):
            mark = "✓" if c.passed else "✗"
            lines.append(f"  {mark} {_printable(_title(c, lang))}  ({_num(c.points)} / {_num(c.max_points)})")
            if c.message and not c.passed:
                lines.append(f"      {_printable(c.message.get(lang))}")
    if result.notes:
        lines.append(f"\n{t['notes']}:")
        lines += [f"  - {_printable(n.get(lang))}" for n in result.notes]
    return "\n".join(lines)
