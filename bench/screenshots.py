"""Screenshots of a feedback page and of the class report, as `autograder grade` wrote them, rendered in headless
Chromium for the README.

    MNIST_DIR=../shared/data/mnist .venv/bin/python bench/screenshots.py [--work DIR] [--out docs]

It builds a Canvas download of a small class (the lab's samples and every one-mistake mutant of the tests,
some handed in twice, three marked late by Canvas, one file of a student not on the roster), a Canvas
gradebook export as the roster (one student without a file), and a copy of cnn_mnist with a due date and 5
points off per started day. Then it grades the download through the real CLI (sandbox, training, judge), and
screenshots the pages the CLI wrote: the Japanese feedback of the student who forgot zero_grad, and the class
report. Nothing on the pages is made up but the download's names and the late marks.

Needs Debian's `chromium` and, for the Japanese text, `fonts-noto-cjk` (apt-get install -y chromium
fonts-noto-cjk). Writes docs/feedback.png and docs/class_report.png; takes a few minutes (it trains the class).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the one-mistake mutants the tests grade

import mutants  # noqa: E402

LATE = '\n[late]\ndue = "2026-12-07T23:59:00+09:00"\npenalty = "per_day"\npoints = 5\ncap = 20\n'
FEEDBACK_OF = "no_zero_grad"  # the student whose page is shown: a loss that blows up, everything predicted as 9


def build_class(work: Path) -> tuple[Path, Path, Path]:
    """(the Canvas download, the roster, the lab folder) under `work`."""
    lab = mutants.course_copy(work)
    with open(lab / "assignment.toml", "a", encoding="utf-8") as f:
        f.write(LATE)
    notebooks = {p.stem: p.read_bytes() for p in sorted((REPO / "samples" / "cnn_mnist").glob("*.ipynb"))}
    for m in mutants.MUTANTS:
        notebooks[m.name] = mutants.write(mutants.mutant_notebook(m), work / f"{m.name}.ipynb").read_bytes()
    download, roster = work / "submissions.zip", work / "canvas_gradebook.csv"
    rows = ["Student,ID,SIS User ID,SIS Login ID,Section,CNN lab (777)", "    Points Possible,,,,,100"]
    with zipfile.ZipFile(download, "w") as z:
        for i, (name, data) in enumerate(notebooks.items()):
            user, login = 1000 + i, name.replace("_", "")
            late = "_LATE" if i % 7 == 3 else ""
            if i % 5 == 1:  # handed in twice: the first attempt is listed, not graded
                z.writestr(f"{login}_{user}_{5000 + i}_cnn_mnist.ipynb", notebooks["untouched"])
            z.writestr(f"{login}{late}_{user}_{6000 + i}_cnn_mnist-1.ipynb" if i % 5 == 1 else
                       f"{login}{late}_{user}_{6000 + i}_Copy of cnn_mnist.ipynb", data)
            rows.append(f'"{name.replace("_", " ").title()}, Student",{user},s{user},{login},Lab {"AB"[i % 2]},')
        z.writestr("visitor_1999_6999_cnn_mnist.ipynb", notebooks["untouched"])  # not on the roster
    rows.append('"Absent, Student",1998,s1998,absent,Lab A,')
    roster.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return download, roster, lab


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
    ap.add_argument("--work", type=Path, help="keep the download, the lab copy and the batch here (default: a "
                                              "temporary folder)")
    ap.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go (default: docs/)")
    args = ap.parse_args()
    if not os.environ.get("MNIST_DIR"):
        sys.exit("set MNIST_DIR to the folder with the four MNIST .gz files (../shared/data/mnist here)")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        download, roster, lab = build_class(work)
        out = work / "out"
        command = [sys.executable, "-m", "autograder.cli", "grade", str(download), "--assignment", str(lab),
                   "--roster", str(roster), "--out", str(out), "--lang", "ja", "--device", "cpu"]
        print("$", " ".join(command[2:]), flush=True)
        subprocess.run(command, cwd=REPO, check=True)
        args.out.mkdir(parents=True, exist_ok=True)
        for page, name in ((out / "feedback" / f"{FEEDBACK_OF.replace('_', '')}.html", "feedback"),
                           (out / "class_report.html", "class_report")):
            png = screenshot(page, args.out / f"{name}.png")
            print(f"{png}  ({png.stat().st_size // 1024} KiB, from {page.name}, {page.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
