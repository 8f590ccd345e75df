"""The class report: one self-contained HTML page for the TA about a whole batch.

What a TA asks after grading, in the order they ask it: how did the class do (scores, after late
penalties), what went wrong (each check's pass rate, the most missed first), who could not be graded
(statuses), how well the networks learned (test accuracy against the threshold), who was late and what it
cost, whose runs were slowest (the ones that will hit the time limit next), and what the intake noticed
(superseded resubmissions, files without a student, students without a file).

Everything comes from the results, the lateness the caller assessed (late.assess) and the intake's lines;
every string from them is escaped, and control and bidi characters in ids are shown as escapes (an id must
not reverse a line of the TA's table).
"""

from __future__ import annotations

import html
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .files import write_atomic
from .late import ON_TIME, Lateness, final
from .report import _num, _printable
from .results import STATUSES, Message, SubmissionResult

CLASS_REPORT = "class_report.html"
SLOWEST = 10  # runs listed as the slowest
PICTURED_CHECKS = 15  # the most missed checks drawn as bars; the table below lists them all
MAX_INTAKE_LINES = 500  # intake notes shown; a download of thousands of stray files says how many more

_TEXT = {
    "en": {
        "title": "Class report", "students": "students", "scores": "Scores", "checks": "Checks, most missed first",
        "statuses": "Statuses", "accuracy": "Test accuracy", "late": "Late submissions", "slowest": "Slowest runs",
        "intake": "Intake notes", "student": "Student", "score": "Score", "check": "Check", "part": "Part",
        "passed": "Passed", "failed": "Failed", "rate": "Pass rate", "lost": "Mean points lost",
        "status": "Status", "count": "Count", "reason": "Reason", "submitted": "Submitted", "how_late": "How late",
        "penalty": "Penalty", "before_after": "Score before → after", "seconds": "Seconds",
        "none_late": "No late submissions.",
        "no_intake": "Nothing to report.", "no_checks": "No check was run.", "not_graded": "Not fully graded",
        "all_graded": "Every submission ran to the end.", "lms_mark": "marked late by the LMS (time unknown)",
        "mean": "mean", "median": "median", "min": "lowest", "max": "highest", "full": "at full points",
        "zero": "at zero", "out_of": "out of", "measured": "measured", "reached": "at or above the threshold",
        "threshold": "threshold",
        "no_results": "No results yet.", "all_passed": "Everyone passed every check.", "more": "… and {n} more lines",
    },
    "ja": {
        "title": "クラスの採点結果", "students": "人", "scores": "得点", "checks": "確認項目（不合格の多い順）",
        "statuses": "状態", "accuracy": "テスト正解率", "late": "遅れた提出", "slowest": "実行時間の長い提出",
        "intake": "提出物の取り込み", "student": "学生", "score": "得点", "check": "確認項目", "part": "パート",
        "passed": "合格", "failed": "不合格", "rate": "合格率", "lost": "平均減点",
        "status": "状態", "count": "人数", "reason": "理由", "submitted": "提出日時", "how_late": "遅れ",
        "penalty": "減点", "before_after": "減点前 → 減点後", "seconds": "秒", "none_late": "遅れた提出はありません。",
        "no_intake": "報告することはありません。", "no_checks": "確認は実行されませんでした。",
        "not_graded": "最後まで実行できなかった提出", "all_graded": "すべての提出が最後まで実行されました。",
        "lms_mark": "LMS の遅延マーク（時間不明）", "mean": "平均", "median": "中央値", "min": "最低", "max": "最高",
        "full": "満点の人数", "zero": "0 点の人数", "out_of": "満点", "measured": "測定", "reached": "基準以上", "threshold": "基準",
        "no_results": "まだ結果がありません。", "all_passed": "全員がすべての確認項目に合格しました。", "more": "… ほか {n} 行",
    },
}

_CSS = """
body{font-family:system-ui,"Hiragino Sans","Yu Gothic",Meiryo,"Noto Sans CJK JP",sans-serif;max-width:64rem;
margin:2rem auto;padding:0 1rem;line-height:1.5;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
nav a{margin-right:.8rem}table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}td.id,li{overflow-wrap:anywhere}
.stats{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;margin:.5rem 0}.stats b{font-size:1.1rem}
figure{margin:.5rem 0 1rem}figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9rem}
.plot-missing{color:#555}.low{color:#b3261e;font-weight:bold}
""".strip()


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _who(result: SubmissionResult) -> str:
    """The id, and the name the roster gave when there is one; shown escaped, controls made visible."""
    name = result.student.get("name", "")
    return _e(_printable(result.student_id) + (f" ({_printable(name)})" if name else ""))


# --------------------------------------------------------------------------------------------------------------
# The numbers


@dataclass(frozen=True)
class CheckRate:
    """How the class did on one check: of the results where it ran, how many passed, and the points lost."""

    part: str
    name: str
    title: Message
    passed: int
    judged: int
    lost: float  # points lost over all judged results

    @property
    def rate(self) -> float:
        return self.passed / self.judged if self.judged else 0.0

    @property
    def mean_lost(self) -> float:
        return self.lost / self.judged if self.judged else 0.0


def check_rates(results: Iterable[SubmissionResult]) -> list[CheckRate]:
    """Each check's pass rate over the results where it ran (a notebook that could not run has no checks and
    is counted under the statuses, not as failing every check), lowest rate first; among equals, the most
    points lost first, then the check's order in the first result that has it."""
    seen: dict[tuple[str, str], list] = {}  # (part, name) -> [title, passed, judged, lost]
    for r in results:
        for c in r.checks:
            entry = seen.setdefault((c.part, c.name), [c.title, 0, 0, 0.0])
            entry[1] += c.passed
            entry[2] += 1
            entry[3] += max(0.0, c.max_points - c.points)
    rates = [CheckRate(part, name, title, passed, judged, round(lost, 4))
             for (part, name), (title, passed, judged, lost) in seen.items()]
    return sorted(rates, key=lambda c: (c.rate, -c.lost))


def scores(results: Sequence[SubmissionResult], lateness: dict[str, Lateness] | None) -> list[float]:
    """Each result's score after its late penalty (late.final), in the results' order."""
    return [final(r, (lateness or {}).get(r.student_id) or ON_TIME) for r in results]


def _accuracies(results: Sequence[SubmissionResult]) -> tuple[list[tuple[SubmissionResult, float]], float | None]:
    measured = [(r, r.measures.accuracy) for r in results if r.measures is not None
                and r.measures.accuracy is not None and math.isfinite(r.measures.accuracy)]
    thresholds = [r.measures.threshold for r, _ in measured if r.measures.threshold is not None]
    # One lab, one threshold; should results from before a change be mixed in, the most common one is drawn.
    threshold = statistics.mode(thresholds) if thresholds else None
    return measured, threshold


def _minus(points: float) -> str:
    """Points off as "-5"; nothing off as "0" (a late notebook that scored nothing loses nothing)."""
    return f"-{_num(points)}" if points > 0 else "0"


def _how_late(lateness: Lateness, lang: str) -> str:
    if lateness.seconds is None:
        return _TEXT[lang]["lms_mark"]
    hours = lateness.seconds / 3600
    if hours < 1:
        return f"{max(1, math.ceil(lateness.seconds / 60))} min" if lang == "en" else \
            f"{max(1, math.ceil(lateness.seconds / 60))} 分"
    if hours < 48:
        return f"{hours:.1f} h" if lang == "en" else f"{hours:.1f} 時間"
    return f"{hours / 24:.1f} days" if lang == "en" else f"{hours / 24:.1f} 日"


# --------------------------------------------------------------------------------------------------------------
# The page


def class_report_html(results: Sequence[SubmissionResult], assignment_title: str, *,
                      lateness: dict[str, Lateness] | None = None, lang: str = "en",
                      intake_lines: Sequence[str] = ()) -> str:
    """The class report for `results` (one per student), in English (default) or Japanese.

    `lateness`: late.assess's verdict per student id (missing: on time); `intake_lines`: what the intake
    reported (superseded submissions, unmatched files, rostered students without a file), shown as given."""
    from . import pictures

    if lang not in _TEXT:
        raise ValueError(f"lang must be one of {', '.join(_TEXT)}, not {lang!r}")
    t = _TEXT[lang]
    results = list(results)
    lateness = lateness or {}
    heading = f"{assignment_title}: {t['title']}" if assignment_title else t["title"]
    sections = [("scores", t["scores"]), ("checks", t["checks"]), ("statuses", t["statuses"]),
                ("accuracy", t["accuracy"]), ("late", t["late"]), ("slowest", t["slowest"]),
                ("intake", t["intake"])]
    out = ["<!DOCTYPE html>", f'<html lang="{lang}">', '<head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(heading)}</title>", f"<style>{_CSS}</style></head>", "<body>",
           f"<h1>{_e(heading)}</h1>",
           "<nav>" + "".join(f'<a href="#{key}">{_e(name)}</a>' for key, name in sections) + "</nav>"]
    if not results:
        out.append(f"<p>{t['no_results']}</p>")

    # Scores, after the late penalty: what the LMS will hold.
    final_scores = scores(results, lateness)
    max_total = max((r.max_total for r in results), default=0.0)
    out.append(f'<section id="scores"><h2>{t["scores"]}</h2>')
    if final_scores:
        stats = [(t["students"] if lang == "en" else t["count"], str(len(results))),
                 (t["mean"], _num(round(statistics.mean(final_scores), 2))),
                 (t["median"], _num(round(statistics.median(final_scores), 2))),
                 (t["min"], _num(min(final_scores))), (t["max"], _num(max(final_scores))),
                 (t["full"], str(sum(1 for s in final_scores if s >= round(max_total, 2) > 0))),
                 (t["zero"], str(sum(1 for s in final_scores if s <= 0))), (t["out_of"], _num(max_total))]
        out.append('<div class="stats">' + "".join(f"<span>{_e(k)}: <b>{_e(v)}</b></span>" for k, v in stats)
                   + "</div>")
        out.append(pictures.score_histogram(final_scores, max_total, lang))
    out.append("</section>")

    # Checks: which mistake the class makes most.
    rates = check_rates(results)
    out.append(f'<section id="checks"><h2>{t["checks"]}</h2>')
    missed = [c for c in rates if c.passed < c.judged][:PICTURED_CHECKS]
    if missed:
        out.append(pictures.pass_rate_bars([(c.title, c.rate) for c in missed], lang))
    elif rates:
        out.append(f"<p>{t['all_passed']}</p>")
    if rates:
        out.append(f"<table><tr><th>{t['check']}</th><th>{t['part']}</th><th>{t['passed']}</th>"
                   f"<th>{t['failed']}</th><th>{t['rate']}</th><th>{t['lost']}</th></tr>")
        for c in rates:
            low = ' low' if c.rate < 0.5 else ""
            out.append(f"<tr><td>{_e(c.title.get(lang))} <small>({_e(c.name)})</small></td><td>{_e(c.part)}</td>"
                       f'<td class="n">{c.passed}</td><td class="n">{c.judged - c.passed}</td>'
                       f'<td class="n{low}">{100 * c.rate:.0f}%</td><td class="n">{_e(_num(c.mean_lost))}</td></tr>')
        out.append("</table>")
    else:
        out.append(f"<p>{t['no_checks']}</p>")
    out.append("</section>")

    # Statuses: counts, then who did not run to the end and why.
    counts = {s: 0 for s in STATUSES}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    out.append(f'<section id="statuses"><h2>{t["statuses"]}</h2>'
               f"<table><tr><th>{t['status']}</th><th>{t['count']}</th></tr>")
    out += [f'<tr><td>{_e(_printable(s))}</td><td class="n">{n}</td></tr>' for s, n in counts.items()]
    out.append("</table>")
    troubled = [r for r in results if r.status != STATUSES[0]]
    if troubled:
        out.append(f"<h3>{t['not_graded']}</h3><table><tr><th>{t['student']}</th><th>{t['status']}</th>"
                   f"<th>{t['reason']}</th></tr>")
        out += [f'<tr><td class="id">{_who(r)}</td><td>{_e(_printable(r.status))}</td>'
                f'<td>{_e(r.reason.get(lang) if r.reason else "")}</td></tr>' for r in troubled]
        out.append("</table>")
    elif results:
        out.append(f"<p>{t['all_graded']}</p>")
    out.append("</section>")

    # Test accuracy against the threshold.
    measured, threshold = _accuracies(results)
    out.append(f'<section id="accuracy"><h2>{t["accuracy"]}</h2>')
    if measured:
        values = [a for _, a in measured]
        stats = [(t["measured"], str(len(values))), (t["median"], f"{100 * statistics.median(values):.2f}%"),
                 (t["min"], f"{100 * min(values):.2f}%"), (t["max"], f"{100 * max(values):.2f}%")]
        if threshold is not None:
            stats += [(t["threshold"], f"{100 * threshold:.2f}%"),
                      (t["reached"], str(sum(1 for a in values if a >= threshold)))]
        out.append('<div class="stats">' + "".join(f"<span>{_e(k)}: <b>{_e(v)}</b></span>" for k, v in stats)
                   + "</div>")
    out.append(pictures.accuracy_histogram([a for _, a in measured], threshold, lang))
    out.append("</section>")

    # Late submissions: the latest first; a mark without a time after those with one.
    late = [(r, lateness[r.student_id]) for r in results if r.student_id in lateness and lateness[r.student_id].late]
    late.sort(key=lambda x: (x[1].seconds is None, -(x[1].seconds or 0.0), x[0].student_id))
    out.append(f'<section id="late"><h2>{t["late"]}</h2>')
    if late:
        out.append(f"<table><tr><th>{t['student']}</th><th>{t['submitted']}</th><th>{t['how_late']}</th>"
                   f"<th>{t['penalty']}</th><th>{t['before_after']}</th></tr>")
        out += [f'<tr><td class="id">{_who(r)}</td><td>{_e(_printable(r.submitted_at))}</td>'
                f"<td>{_e(_how_late(lt, lang))}</td><td class=\"n\">{_e(_minus(lt.penalty))}</td>"
                f'<td class="n">{_e(_num(round(r.total, 2)))} → {_e(_num(final(r, lt)))}</td></tr>' for r, lt in late]
        out.append("</table>")
    else:
        out.append(f"<p>{t['none_late']}</p>")
    out.append("</section>")

    # The slowest runs: the next ones to meet the time limit.
    slow = sorted(results, key=lambda r: (-r.seconds, r.student_id))[:SLOWEST]
    out.append(f'<section id="slowest"><h2>{t["slowest"]}</h2>')
    if slow:
        out.append(f"<table><tr><th>{t['student']}</th><th>{t['seconds']}</th><th>{t['status']}</th></tr>")
        out += [f'<tr><td class="id">{_who(r)}</td><td class="n">{r.seconds:.1f}</td>'
                f"<td>{_e(_printable(r.status))}</td></tr>" for r in slow]
        out.append("</table>")
    out.append("</section>")

    # What the intake noticed, as it said it.
    lines = [line for line in intake_lines if line.strip()]
    out.append(f'<section id="intake"><h2>{t["intake"]}</h2>')
    if lines:
        out.append("<ul>" + "".join(f"<li>{_e(_printable(line))}</li>" for line in lines[:MAX_INTAKE_LINES])
                   + "</ul>")
        if len(lines) > MAX_INTAKE_LINES:
            out.append(f"<p>{_e(t['more'].format(n=len(lines) - MAX_INTAKE_LINES))}</p>")
    else:
        out.append(f"<p>{t['no_intake']}</p>")
    out += ["</section>", "</body>", "</html>", ""]
    return "\n".join(out)


def write_class_report(results: Sequence[SubmissionResult], path: str | os.PathLike[str], assignment_title: str,
                       *, lateness: dict[str, Lateness] | None = None, lang: str = "en",
                       intake_lines: Sequence[str] = ()) -> Path:
    """Write the class report atomically and return its path: `path` itself when it names an .html file,
    else <path>/class_report.html (path being the lab's output folder, out/<lab>/)."""
    path = Path(path)
    if path.suffix.lower() != ".html":
        path = path / CLASS_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, class_report_html(results, assignment_title, lateness=lateness, lang=lang,
                                         intake_lines=intake_lines))
    return path
