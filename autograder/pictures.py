"""Pictures for the feedback pages and the class report, drawn with matplotlib into self-contained HTML.

Each function returns an HTML fragment: a <figure> holding one <img> whose source is an SVG in a data: URI,
or a short paragraph saying why there is no picture (nothing was measured). Why SVG in an <img>:
- vector: sharp at any zoom and in print, and no larger than a PNG at a resolution that is sharp on a laptop;
- matplotlib writes SVG text as glyph outlines (svg.fonttype "path"), so the CJK font is baked in exactly as
  a PNG would bake it: the page looks the same on a viewer without that font (the one thing inline SVG text
  would get wrong);
- inside an <img> the SVG is a picture, not part of the page: its ids (glyphs, clip paths) cannot collide
  with another figure's on the same page, and nothing in it can run;
- nothing outside the page is fetched (no file, no font, no DTD), so the page works offline and from an LMS.
The text a PNG or an outline cannot give (selectable, read aloud) is in the alt text and the caption.

matplotlib is imported here, lazily, inside the drawing functions: importing it costs about a second, which
`autograder --help` or `autograder status` must not pay. Figures are built with the object API (no pyplot,
no global figure state), and written deterministically (a fixed hash salt, no date in the metadata): the same
result gives the same page byte for byte, so regenerating a class's feedback changes no file needlessly.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager
from functools import lru_cache

from .results import Message

LANGS = ("ja", "en")

# Characters the Japanese labels use: a font that lacks any of them would draw tofu boxes.
_JA_SAMPLE = "損失学習正解率混同行列予測実際点数確認項目合格基準人数"
# Japanese fonts in the order we prefer them; any other font with "CJK" or "JP" in its name comes after.
_PREFERRED = ("Noto Sans CJK JP", "Noto Sans JP", "Source Han Sans JP", "Source Han Sans", "IPAexGothic",
              "IPAPGothic", "IPAGothic", "Hiragino Sans", "Hiragino Kaku Gothic ProN", "Yu Gothic", "Meiryo",
              "TakaoPGothic", "TakaoGothic", "VL PGothic", "VL Gothic", "Noto Sans CJK SC", "Noto Sans CJK TC",
              "Noto Sans CJK KR", "Droid Sans Fallback", "WenQuanYi Zen Hei")
_LIKELY_FILE = re.compile(r"cjk|jp|japan|ipa|takao|gothic|hiragino|meiryo|yugoth|sourcehan|droidsansfallback|wqy",
                          re.IGNORECASE)

_TEXT = {
    "en": {
        "batch": "batch", "loss": "training loss", "yours": "your training", "key": "answer key (same budget)",
        "true": "true class", "predicted": "predicted class", "score": "score", "students": "students",
        "accuracy": "test accuracy (%)", "threshold": "threshold", "pass_rate": "students who passed (%)",
        "mean": "mean",
    },
    "ja": {
        "batch": "ミニバッチ", "loss": "学習の損失", "yours": "あなたの学習", "key": "模範解答（同じ条件）",
        "true": "実際のクラス", "predicted": "予測したクラス", "score": "得点", "students": "人数",
        "accuracy": "テスト正解率（%）", "threshold": "満点の基準", "pass_rate": "合格した学生の割合（%）",
        "mean": "平均",
    },
}

# What the page says about a picture, always in the page's language (the page's own font shows it).
_CAPTION = {
    "no_losses": Message("学習の損失が記録されていないため、学習曲線は描けません（学習が最後まで確認できなかった実行です）。",
                         "No training loss was recorded, so there is no loss curve (the run's training could not be "
                         "confirmed to the end)."),
    "no_key": Message("模範解答の学習曲線はありません。", "The answer key's curve is not available."),
    "nonfinite": Message("{n} 個のミニバッチで損失が有限の値ではありませんでした（nan や inf。学習が発散しています）。",
                         "{n} batches had a loss that is not a finite number (nan or inf: the training diverged)."),
    "loss": Message("ミニバッチごとの学習の損失。青: あなたの学習、橙: 同じ条件での模範解答。"
                    "薄い線が各ミニバッチ、太い線が {w} ミニバッチの移動平均です。",
                    "Training loss per batch. Blue: your training; orange: the answer key under the same budget. "
                    "The pale line is each batch, the thick one a moving average over {w} batches."),
    "thinned": Message("長い学習は連続するミニバッチの平均で示しています。",
                       "A long run is shown as means of consecutive batches."),
    "loss_alt": Message("学習の損失: あなたは {first} から {last}", "Training loss: yours from {first} to {last}"),
    "loss_alt_key": Message("、模範解答は {first} から {last}", "; the answer key's from {first} to {last}"),
    "no_confusion": Message("混同行列はありません（学習した重みでテストできませんでした）。",
                            "There is no confusion matrix (the trained weights could not be tested)."),
    "confusion": Message("テストデータでの混同行列: 行が実際のクラス、列が予測したクラス、数字は枚数です。"
                         "青は正解（濃いほどそのクラスの正解率が高い）、赤は誤り（濃いほど多い）。",
                         "Confusion matrix on the test set: rows are the true class, columns the predicted one, "
                         "numbers count images. Blue: right answers (darker, a larger share of the class); "
                         "red: mistakes (darker, more frequent)."),
    "top_mistake": Message("最も多い誤り: 実際は {true} を {pred} と予測（{n} 枚）。",
                           "Most frequent mistake: a true {true} predicted as {pred} ({n} images)."),
    "weakest": Message("正解率が最も低いクラス: {cls}（{pct:.1f}%）。", "Weakest class: {cls} ({pct:.1f}% right)."),
    "no_scores": Message("得点がありません。", "No scores."),
    "scores": Message("得点の分布（{n} 人、平均 {mean}）。", "Score distribution ({n} students, mean {mean})."),
    "no_accuracy": Message("テスト正解率が測られた提出はありません。", "No submission had its test accuracy measured."),
    "accuracy": Message("テスト正解率の分布（{n} 人）。縦線は満点の基準 {thr}。",
                        "Distribution of test accuracy ({n} students); the line is the threshold for full "
                        "points, {thr}."),
    "accuracy_nothr": Message("テスト正解率の分布（{n} 人）。", "Distribution of test accuracy ({n} students)."),
    "no_checks": Message("確認項目の結果がありません。", "No check results."),
    "pass_rates": Message("確認項目ごとの合格率（低いものから）。", "Pass rate of each check, lowest first."),
}

MAX_MATRIX = 100  # classes; a larger "confusion matrix" is not one we computed
MAX_ANNOTATED = 20  # classes up to which each cell shows its count
MAX_BARS = 60  # checks in the pass-rate picture (a lab has a few dozen)


# --------------------------------------------------------------------------------------------------------------
# Fonts


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The family name of an installed font that has the Japanese labels' characters, or None.

    matplotlib keeps a cache of the fonts it found at its first run, so a font installed later (apt-get install
    fonts-noto-cjk) is not in its list: when the list has none, the system's font files that look Japanese are
    added and looked at again (once per process)."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    found = _covering_font(manager.ttflist)
    if found is None:
        known = {entry.fname for entry in manager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known and _LIKELY_FILE.search(os.path.basename(path)):
                try:
                    manager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a broken font file is not ours to fix
                    continue
        found = _covering_font(manager.ttflist)
    return found


def _covering_font(entries) -> str | None:
    def rank(entry) -> int:
        return _PREFERRED.index(entry.name) if entry.name in _PREFERRED else len(_PREFERRED)

    candidates = sorted((e for e in entries if e.name in _PREFERRED or "CJK" in e.name or " JP" in e.name),
                        key=rank)
    for entry in candidates:
        if _covers(entry.fname):
            return entry.name
    return None


@lru_cache(maxsize=64)
def _covers(path: str) -> bool:
    from matplotlib import ft2font

    try:
        charmap = ft2font.FT2Font(path).get_charmap()
    except (OSError, RuntimeError, ValueError):
        return False
    return all(ord(c) in charmap for c in _JA_SAMPLE)


def label_lang(lang: str) -> str:
    """The language of the labels drawn in a picture: Japanese only when a font can draw it, else English
    (English labels on a Japanese page beat boxes where the characters should be)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}, not {lang!r}")
    return "ja" if lang == "ja" and cjk_font() is not None else "en"


def _rc(lang: str) -> dict:
    families = ["DejaVu Sans"]
    if lang == "ja":
        families.insert(0, cjk_font())  # label_lang chose "ja" only when there is one
    return {"font.family": families, "font.size": 10, "svg.fonttype": "path", "svg.hashsalt": "autograder",
            "axes.unicode_minus": False,  # the CJK fonts' minus sign is the ASCII one; U+2212 may be missing
            "axes.spines.top": False, "axes.spines.right": False}


# --------------------------------------------------------------------------------------------------------------
# Figure -> HTML


@contextmanager
def _drawing(lang: str):
    """matplotlib's Figure class under our settings: text takes its font when it is created, so everything from
    the figure to the saved file is drawn inside this block."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # never a window; a backend someone chose before is kept
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_rc(lang)):
        yield Figure


def _html(fig, alt: str, caption: str) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue().decode("utf-8")
    # The DTD's address and the RDF metadata's: nothing in the page may name a place outside it (the xmlns
    # declarations that remain are names, which no viewer fetches).
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg, count=1)
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.DOTALL)
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    width, height = (round(v * 96) for v in fig.get_size_inches())  # CSS pixels: 96 per inch
    return (f'<figure class="plot"><img src="data:image/svg+xml;base64,{data}" width="{width}" height="{height}" '
            f'alt="{html.escape(alt, quote=True)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _missing(text: str) -> str:
    return f'<p class="plot-missing">{html.escape(text)}</p>'


def _finite(values: Sequence[float]) -> tuple[list[float], int]:
    """The values as floats, each one that is not finite (or not a number) as nan; and how many those were."""
    out = []
    for v in values:
        try:
            v = float(v)
        except (TypeError, ValueError):
            v = math.nan
        out.append(v if math.isfinite(v) else math.nan)
    return out, sum(1 for v in out if math.isnan(v))


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """The mean of the finite values within `window` // 2 on either side of each point (nan where none is):
    a centred average keeps the curve where it is instead of shifting it to the right."""
    half = window // 2
    sums, counts = [0.0], [0]
    for v in values:
        finite = not math.isnan(v)
        sums.append(sums[-1] + (v if finite else 0.0))
        counts.append(counts[-1] + finite)
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        n = counts[hi] - counts[lo]
        out.append((sums[hi] - sums[lo]) / n if n else math.nan)
    return out


def _short(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "nan"


# --------------------------------------------------------------------------------------------------------------
# Feedback pictures


def loss_curve(student_losses: Sequence[float], reference_losses: Sequence[float] | None, lang: str,
               *, thinned_at: int = 1000) -> str:
    """The student's training loss per batch beside the answer key's under the same budget.

    No student losses: a sentence instead (the answer key's curve alone tells the student nothing about their
    run). No reference: the student's curve alone, and the caption says so. `thinned_at` is the length at
    which results keep means of consecutive batches (grade.MAX_CURVE_POINTS): the caption then says so."""
    drawn = label_lang(lang)
    yours, bad = _finite(student_losses or ())
    key, _ = _finite(reference_losses or ())
    if not yours or bad == len(yours):
        return _missing(_CAPTION["no_losses"].get(lang))
    t = _TEXT[drawn]
    window = max(1, max(len(yours), len(key)) // 50)
    with _drawing(drawn) as Figure:
        fig = Figure(figsize=(7.0, 3.2), layout="constrained")
        ax = fig.add_subplot()
        # Each batch's loss is noisy: drawn thin and pale, with a moving average over it to compare the trends.
        for values, colour, label, z in ((yours, "#1f6fb4", t["yours"], 2), (key, "#d9822b", t["key"], 3)):
            if values:
                x = range(1, len(values) + 1)
                ax.plot(x, values, color=colour, linewidth=0.6, alpha=0.3, zorder=z)
                ax.plot(x, moving_average(values, window), color=colour, linewidth=1.8, label=label, zorder=z)
        ax.set_xlabel(t["batch"])
        ax.set_ylabel(t["loss"])
        finite = [v for v in (*yours, *key) if math.isfinite(v) and v > 0]
        if finite and max(finite) > 20 * min(max(key, default=max(finite)), 2.5):
            # A loss that blows up (a loop that never clears its gradients) would flatten the answer key's curve
            # to a line at 0 on a linear axis: on a log axis both stay readable.
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.legend(frameon=False, loc="best")
        caption = [_CAPTION["loss"].get(lang).format(w=window)]
        if not key:
            caption.append(_CAPTION["no_key"].get(lang))
        if bad:
            caption.append(_CAPTION["nonfinite"].get(lang).format(n=bad))
        if max(len(yours), len(key)) >= thinned_at:
            caption.append(_CAPTION["thinned"].get(lang))
        ends = [v for v in yours if not math.isnan(v)]
        alt = _CAPTION["loss_alt"].get(lang).format(first=_short(ends[0]), last=_short(ends[-1]))
        key_ends = [v for v in key if not math.isnan(v)]
        if key_ends:
            alt += _CAPTION["loss_alt_key"].get(lang).format(first=_short(key_ends[0]), last=_short(key_ends[-1]))
        return _html(fig, alt + ("。" if lang == "ja" else "."), _join(caption, lang))


def _join(sentences: list[str], lang: str) -> str:
    return ("" if lang == "ja" else " ").join(sentences)


def _square(matrix: Sequence[Sequence[int]]) -> list[list[int]] | None:
    """The matrix as lists of non-negative ints, or None when it is not a square matrix of counts."""
    try:
        rows = [[int(v) for v in row] for row in matrix]
        exact = all(float(v) == int(v) for row in matrix for v in row)
    except (TypeError, ValueError, OverflowError):
        return None
    n = len(rows)
    if not 2 <= n <= MAX_MATRIX or any(len(r) != n for r in rows) or not exact:
        return None
    if any(v < 0 for r in rows for v in r) or not any(v for r in rows for v in r):
        return None
    return rows


def confusion_matrix(matrix: Sequence[Sequence[int]], lang: str) -> str:
    """An N x N matrix of counts (rows the true class, columns the predicted one) with the counts in the
    cells, shaded by each true class's share, and a caption naming the most frequent mistake."""
    drawn = label_lang(lang)
    rows = _square(matrix)
    if rows is None:
        return _missing(_CAPTION["no_confusion"].get(lang))
    n = len(rows)
    shares = [[v / (sum(r) or 1) for v in r] for r in rows]
    caption = [_CAPTION["confusion"].get(lang)]
    mistakes = [(v, i, j) for i, r in enumerate(rows) for j, v in enumerate(r) if i != j and v]
    if mistakes:
        v, i, j = max(mistakes, key=lambda m: (m[0], -m[1], -m[2]))  # among equals, the first in reading order
        caption.append(_CAPTION["top_mistake"].get(lang).format(true=i, pred=j, n=v))
    judged = [(rows[i][i] / sum(rows[i]), i) for i in range(n) if sum(rows[i])]
    if judged:
        share, cls = min(judged)
        caption.append(_CAPTION["weakest"].get(lang).format(cls=cls, pct=100 * share))
    t = _TEXT[drawn]
    side = min(7.0, 1.6 + 0.4 * n)
    with _drawing(drawn) as Figure:
        import matplotlib

        fig = Figure(figsize=(side + 0.4, side), layout="constrained")
        ax = fig.add_subplot()
        # Right answers in blue by their share of the class; mistakes in red by how they compare with the most
        # frequent one, so that a 2 % confusion is visible beside a 98 % diagonal.
        worst = max((v for i, r in enumerate(rows) for j, v in enumerate(r) if i != j), default=0) or 1
        blues, reds = matplotlib.colormaps["Blues"], matplotlib.colormaps["Reds"]
        image = [[blues(0.15 + 0.85 * shares[i][j]) if i == j else
                  (reds(0.04 + 0.66 * v / worst) if v else (1.0, 1.0, 1.0, 1.0)) for j, v in enumerate(r)]
                 for i, r in enumerate(rows)]
        ax.imshow(image, interpolation="nearest")
        if n <= MAX_ANNOTATED:
            size = 9 if n <= 10 else 7
            for i, row in enumerate(rows):
                for j, v in enumerate(row):
                    dark = (i == j and shares[i][j] > 0.45) or (i != j and v / worst > 0.6)
                    # in_layout=False: the counts sit inside the axes; measuring 100 of them for the layout
                    # costs more than drawing them.
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=size, in_layout=False,
                            color="white" if dark else ("#222" if v else "#aaa"))
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.tick_params(length=0, labelsize=9 if n <= 20 else 6)
        ax.set_xlabel(t["predicted"])
        ax.set_ylabel(t["true"])
        ax.xaxis.set_label_position("top")
        ax.xaxis.tick_top()
        for spine in ax.spines.values():
            spine.set_visible(False)
        return _html(fig, _join(caption[1:], lang) or caption[0], _join(caption, lang))


# --------------------------------------------------------------------------------------------------------------
# Class report pictures


def score_histogram(scores: Sequence[float], max_score: float, lang: str) -> str:
    """How many students scored how much, from 0 to `max_score`, with the mean marked."""
    drawn = label_lang(lang)
    values = [v for v in _finite(scores)[0] if not math.isnan(v)]
    if not values:
        return _missing(_CAPTION["no_scores"].get(lang))
    t = _TEXT[drawn]
    top = max(float(max_score), max(values), 1.0)
    mean = sum(values) / len(values)
    caption = _CAPTION["scores"].get(lang).format(n=len(values), mean=f"{mean:.2f}".rstrip("0").rstrip("."))
    with _drawing(drawn) as Figure:
        fig = Figure(figsize=(7.0, 3.0), layout="constrained")
        ax = fig.add_subplot()
        ax.hist([min(max(v, 0.0), top) for v in values], bins=20 if top >= 20 else 10, range=(0.0, top),
                color="#1f6fb4", edgecolor="white")
        ax.axvline(mean, color="#b3261e", linestyle="--", linewidth=1.2, label=f"{t['mean']} {mean:.1f}")
        ax.set_xlabel(t["score"])
        ax.set_ylabel(t["students"])
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(frameon=False, loc="upper left")
        return _html(fig, caption, caption)


def accuracy_histogram(accuracies: Sequence[float], threshold: float | None, lang: str) -> str:
    """The test accuracies reached (fractions, drawn in %), with the threshold for full points as a line."""
    drawn = label_lang(lang)
    values = [100 * v for v in _finite(accuracies)[0] if not math.isnan(v)]
    if not values:
        return _missing(_CAPTION["no_accuracy"].get(lang))
    t = _TEXT[drawn]
    thr = 100 * threshold if threshold is not None and math.isfinite(threshold) else None
    low = max(0.0, math.floor((min(values + ([thr] if thr is not None else [])) - 1) / 5) * 5)
    if thr is not None:
        caption = _CAPTION["accuracy"].get(lang).format(n=len(values), thr=f"{thr:.2f}%")
    else:
        caption = _CAPTION["accuracy_nothr"].get(lang).format(n=len(values))
    with _drawing(drawn) as Figure:
        fig = Figure(figsize=(7.0, 3.0), layout="constrained")
        ax = fig.add_subplot()
        ax.hist([min(max(v, low), 100.0) for v in values], bins=20, range=(low, 100.0), color="#2e8b57",
                edgecolor="white")
        if thr is not None:
            ax.axvline(thr, color="#b3261e", linewidth=1.5, label=f"{t['threshold']} {thr:.1f}%")
            ax.legend(frameon=False, loc="upper left")
        ax.set_xlabel(t["accuracy"])
        ax.set_ylabel(t["students"])
        ax.yaxis.get_major_locator().set_params(integer=True)
        return _html(fig, caption, caption)


def pass_rate_bars(rates: Sequence[tuple[Message | str, float]], lang: str) -> str:
    """One horizontal bar per check: the share of students who passed it (0..1), lowest first (at the top),
    so the mistake the class makes most is the first thing read."""
    drawn = label_lang(lang)
    rows = sorted(((label, float(rate)) for label, rate in rates if rate is not None and math.isfinite(rate)),
                  key=lambda r: r[1])[:MAX_BARS]  # sorted is stable: equal rates keep the caller's order
    if not rows:
        return _missing(_CAPTION["no_checks"].get(lang))
    names = [_clip(label.get(drawn) if isinstance(label, Message) else str(label)) for label, _ in rows]
    pct = [100 * r for _, r in rows]
    caption = _CAPTION["pass_rates"].get(lang)
    with _drawing(drawn) as Figure:
        fig = Figure(figsize=(7.5, 0.9 + 0.26 * len(rows)), layout="constrained")
        ax = fig.add_subplot()
        y = list(range(len(rows)))[::-1]  # the first row at the top
        ax.barh(y, pct, height=0.7,
                color=["#b3261e" if p < 50 else "#e0a030" if p < 80 else "#2e8b57" for p in pct])
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel(_TEXT[drawn]["pass_rate"])
        for yy, p in zip(y, pct):
            ax.text(min(p + 1, 91), yy, f"{p:.0f}%", va="center", fontsize=7)
        ax.tick_params(axis="y", length=0)
        return _html(fig, caption, caption)


def _clip(text: str, most: int = 44) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[:most - 1] + "…"
