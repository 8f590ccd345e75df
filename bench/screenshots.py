"""Screenshots of a feedback page and of the class report, rendered in headless Chromium, for the README.

    .venv/bin/python bench/screenshots.py [--results out/demo/cnn_mnist/results] [--out docs] [--keep DIR]

The pages are built from real results when the demo's results folder is there (`autograder grade` on
samples/, out/demo/cnn_mnist/results/*.json), else from results made up here; either way the judge's
measures (loss per batch, confusion matrix, test accuracy) are made up, deterministically, because results
graded before issue 16 do not hold them. A class of 36 is drawn from those results, with a due date and a
per-day late policy, so that every section of the class report has something in it.

Needs Debian's `chromium` and, for the Japanese text, `fonts-noto-cjk` (apt-get install -y chromium
fonts-noto-cjk). Writes docs/feedback.png and docs/class_report.png; with --keep, the HTML pages too.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder import classreport, report  # noqa: E402
from autograder.config import Late  # noqa: E402
from autograder.late import assess  # noqa: E402
from autograder.results import GRADED, CheckResult, Measures, Message, SubmissionResult  # noqa: E402

MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)  # images per digit in the test set
# Digit pairs a small CNN mixes up most on MNIST: 4/9, 3/5, 7/2, 8/3.
CONFUSED = {4: (9, 6), 9: (4, 7), 3: (5, 8), 5: (3, 6), 7: (2, 9), 2: (7, 8), 8: (3, 5), 6: (5, 0), 1: (7, 2),
            0: (6, 5)}
LATE = Late(due="2025-12-07T23:59:00+09:00", penalty="per_day", points=5.0, cap=20.0)
BATCHES = 938  # one epoch of 60,000 images in batches of 64
NAMES = ("山田 太郎", "佐藤 花子", "鈴木 一郎", "高橋 美咲", "田中 健", "伊藤 さくら", "渡辺 翔", "中村 葵",
         "小林 陽斗", "加藤 結衣", "吉田 蓮", "山本 美月")


def loss_curve(rng: random.Random, floor: float, speed: float, noise: float, diverge: bool = False) -> tuple:
    """A plausible training loss per batch: from ln(10) = 2.30 down to `floor`, noisy; or blowing up."""
    losses = []
    for i in range(BATCHES):
        if diverge:
            value = 2.31 * math.exp(i / 170) * (1 + 0.4 * rng.random())
        else:
            value = floor + (2.30 - floor) * math.exp(-i / speed)
            value *= 1 + noise * (rng.random() - 0.5) * 2
        losses.append(round(value, 4))
    return tuple(losses)


def confusion(rng: random.Random, accuracy: float) -> tuple:
    """Test-set counts with about `accuracy` on the diagonal, the errors mostly on the usual pairs."""
    rows = []
    for true, n in enumerate(MNIST_TEST_COUNTS):
        wrong = round(n * (1 - accuracy) * rng.uniform(0.6, 1.4))
        row = [0] * 10
        first, second = CONFUSED[true]
        row[first] += round(wrong * 0.5)
        row[second] += round(wrong * 0.25)
        for _ in range(wrong - row[first] - row[second]):
            row[rng.choice([c for c in range(10) if c != true])] += 1
        row[true] = n - sum(row)
        rows.append(tuple(row))
    return tuple(rows)


def measures_for(kind: str, rng: random.Random) -> Measures | None:
    if kind in ("truncated", "untouched"):
        return None  # nothing trained: the judge measured nothing
    if kind == "no_zero_grad":
        accuracy = 0.1009
        rows = tuple(tuple(n if c == 9 else 0 for c in range(10)) for n in MNIST_TEST_COUNTS)  # all "9"
        return Measures(accuracy, 0.90, loss_curve(rng, 0, 0, 0, diverge=True), rows)
    accuracy = {"answer_key": 0.976, "off_by_one": 0.972, "missing_relu": 0.931}.get(kind, 0.95)
    accuracy = min(0.995, accuracy + rng.uniform(-0.012, 0.006))
    floor = {"missing_relu": 0.33}.get(kind, 0.09)
    return Measures(round(accuracy, 4), 0.90, loss_curve(rng, floor, rng.uniform(110, 160), 0.35),
                    confusion(rng, accuracy))


def demo_results(folder: Path) -> list[SubmissionResult]:
    """The demo's graded results, or two made up here when the demo was not graded on this machine."""
    results = [SubmissionResult.from_json(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
    if results:
        return results
    lost = Message("期待値: (13, 13)\n実際: (14, 14)\nヒント: パディングとストライド",
                   "expected (13, 13)\nobserved (14, 14)\nhint: padding and stride")
    checks = (CheckResult("conv_stride", "shapes", Message("畳み込みのストライド", "convolution stride"), 0, 10, lost),
              CheckResult("forward", "net", Message("順伝播", "forward pass"), 25, 25))
    made = SubmissionResult("off_by_one", GRADED, None, {"shapes": 10.0, "net": 25.0},
                            {"shapes": 20.0, "net": 25.0}, checks, seconds=12.9)
    key = replace(made, student_id="answer_key", parts={"shapes": 20.0, "net": 25.0},
                  checks=(replace(checks[0], points=10, message=None), checks[1]), seconds=6.6)
    return [key, made]


def one_student(demo: list[SubmissionResult]) -> tuple[SubmissionResult, object, tuple]:
    """The feedback page's student: off_by_one (points lost in one part, training fine), handed in a day and
    two hours late, with the answer key's curve beside theirs."""
    rng = random.Random(16)
    base = next((r for r in demo if r.student_id == "off_by_one"), demo[-1])
    result = replace(base, student_id="s2025017", submitted_at="2025-12-09T02:10:00+09:00",
                     student={"name": "山田 太郎"}, measures=measures_for("off_by_one", rng))
    reference = loss_curve(random.Random(0), 0.07, 120, 0.3)
    return result, assess(LATE, result), reference


def a_class(demo: list[SubmissionResult]) -> tuple[list[SubmissionResult], dict, list[str]]:
    """36 students drawn from the demo's results, a few late, with the intake's notes."""
    rng = random.Random(2025)
    by_id = {r.student_id: r for r in demo}
    weights = {"answer_key": 14, "off_by_one": 7, "missing_relu": 6, "no_zero_grad": 4, "untouched": 3, "truncated": 2}
    kinds = [k for k in weights if k in by_id] or [r.student_id for r in demo]
    results, lateness = [], {}
    for i in range(36):
        kind = rng.choices(kinds, weights=[weights.get(k, 1) for k in kinds])[0]
        base = by_id[kind]
        hours_early = rng.uniform(-60, 72) if rng.random() < 0.2 else rng.uniform(1, 96)
        when = (datetime.fromisoformat(LATE.due) - timedelta(hours=hours_early)).isoformat(timespec="seconds")
        r = replace(base, student_id=f"s2025{i + 1:03d}", submitted_at=when,
                    student={"name": NAMES[i % len(NAMES)]} if i % 3 == 0 else {},
                    seconds=round(max(0.2, base.seconds * rng.uniform(0.8, 1.9)), 2),
                    measures=measures_for(kind, rng))
        results.append(r)
        lateness[r.student_id] = assess(LATE, r)
    intake = ["superseded: s2025004 handed in again; s2025004_LATE_12347_67892_cnn_mnist-1.ipynb is graded, "
              "s2025004_12347_67880_cnn_mnist.ipynb is not",
              "unmatched: Student Nine_99999_assignsubmission_file_/cnn_mnist.ipynb matches no student in the roster",
              "missing: s2025037 (中村 葵) is in the roster but handed in nothing"]
    return results, lateness, intake


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no chromium on PATH: apt-get install -y chromium fonts-noto-cjk")


def screenshot(page: Path, png: Path, width: int = 1000, height: int = 6000) -> Path:
    """The page rendered by headless Chromium, `width` CSS pixels wide, the white below the content cut off."""
    from PIL import Image, ImageChops

    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--force-device-scale-factor=1", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
                        f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    with Image.open(png) as image:
        image = image.convert("RGB")
        box = ImageChops.difference(image, Image.new("RGB", image.size, "white")).getbbox()
        if box is not None:  # keep the full width and a margin under the last thing drawn
            image = image.crop((0, 0, image.width, min(image.height, box[3] + 24)))
        # A palette of 256 colours: the pages are text, flat fills and thin lines, which it keeps intact, and
        # the PNG is a third of the size (these files live in the repository).
        image.quantize(colors=256, dither=Image.Dither.NONE).save(png, optimize=True)
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "out/demo/cnn_mnist/results",
                    help="graded results to start from (default: out/demo/cnn_mnist/results)")
    ap.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go (default: docs/)")
    ap.add_argument("--keep", type=Path, help="also write the two HTML pages into this folder")
    args = ap.parse_args()

    demo = demo_results(args.results)
    student, late, reference = one_student(demo)
    feedback = report.feedback_html(student, lang="ja", assignment_title="CNN on MNIST", lateness=late,
                                    reference_losses=reference)
    results, lateness, intake = a_class(demo)
    klass = classreport.class_report_html(results, "CNN on MNIST", lateness=lateness, lang="en",
                                          intake_lines=intake)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pages = Path(args.keep) if args.keep else Path(tmp)
        pages.mkdir(parents=True, exist_ok=True)
        for name, text in (("feedback", feedback), ("class_report", klass)):
            page = pages / f"{name}.html"
            page.write_text(text, encoding="utf-8")
            png = screenshot(page, args.out / f"{name}.png")
            print(f"{png}  ({png.stat().st_size // 1024} KiB, from {page.stat().st_size // 1024} KiB of HTML)")


if __name__ == "__main__":
    main()
