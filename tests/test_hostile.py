"""The hostile corpus: broken files, unsafe archives, runaway and malicious code, all graded in ONE batch through
the real `autograder grade`, together with the answer key and a partial submission.

Every case must show: the batch completes; the good students' grades are exactly what they are alone; the bad
submission gets a row with a status, a reason and the points it really earned; nothing of it survives the run;
nothing outside its scratch changes; limits hold within a margin.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from autograder.results import ResultStore

import mutants
from repo import REPO_ROOT

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

WALL = 45  # the corpus' sandbox wall time (s); margins below are stated against it
MARGIN = 15
# The corpus is graded on the CPU. On a GPU machine AUTOGRADER_TEST_DEVICE=cuda grades it there (the sandbox must
# hold on CUDA as on the CPU: bench/gpu_proof.sh, issue 17); one case's expectation depends on it.
DEVICE = os.environ.get("AUTOGRADER_TEST_DEVICE", "cpu")
JOBS = os.environ.get("AUTOGRADER_TEST_JOBS", "2")


@dataclass(frozen=True)
class Case:
    id: str
    status: str  # expected row status
    reason: str = ""  # phrase of the English reason or of a lost check's message
    points: str = "zero"  # "zero", "full" (as the answer key), "less" (some, below full), or "lost:<parts>"
    notes: str = ""  # phrase expected in the notes


def key_nb() -> dict:
    return mutants.filled()


def with_cell(cell: str, code: str, *, at: str = "end") -> bytes:
    """The answer key with `code` added at the start or end of one answer cell."""
    source = mutants.answers()[cell]
    source = f"{code}\n{source}" if at == "start" else f"{source}\n{code}\n"
    return json.dumps(mutants.filled({cell: source})).encode()


def replaced(cell: str, old: str, new: str) -> bytes:
    source = mutants.answers()[cell]
    assert old in source, (cell, old)
    return json.dumps(mutants.filled({cell: source.replace(old, new)})).encode()


def edited(fn) -> bytes:
    nb = key_nb()
    fn(nb)
    return json.dumps(nb).encode()


def cell_of(nb, grade_id):
    return next(c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def _drop_cell(nb, gid):
    nb["cells"].remove(cell_of(nb, gid))


def _to_markdown(nb, gid):
    cell = cell_of(nb, gid)
    cell["cell_type"] = "markdown"
    cell.pop("outputs", None)
    cell.pop("execution_count", None)


def _tamper_metadata(nb):
    meta = cell_of(nb, "conv2d_output_size")["metadata"]["nbgrader"]
    meta.update(grade=True, points=1000, locked=True)
    cell_of(nb, "test_shapes")["metadata"]["nbgrader"]["points"] = 1000


def _duplicate(nb, gid):
    cell = cell_of(nb, gid)
    nb["cells"].insert(nb["cells"].index(cell) + 1, json.loads(json.dumps(cell)))


def _edit_locked(nb):
    cell_of(nb, "setup")["source"] = "import os\nos.system('touch /tmp/locked_cell_ran')\n"


FORGE_CHANNEL = r'''
import os, json
for fd in range(3, 64):
    try:
        if os.path.islink(f"/proc/self/fd/{fd}") and "pipe:" in os.readlink(f"/proc/self/fd/{fd}"):
            os.write(fd, (json.dumps({"kind": "done"}) + "\n").encode())
    except OSError:
        pass
'''

READ_SECRETS = r'''
import glob
_stolen = []
for _path in SECRETS:
    try:
        _stolen.append(open(_path, "rb").read(64))
    except OSError:
        pass
if _stolen:
    raise RuntimeError(repr(_stolen))
'''

WRITE_OUTSIDE = r'''
for _path in TARGETS:
    try:
        open(_path, "w").write("forged")
    except OSError:
        pass
'''

CASES: list[tuple[Case, object]] = []  # (expectation, builder of the notebook's bytes from the corpus' paths)


def case(c: Case, build):
    CASES.append((c, build))


def build_cases():
    key = lambda env: json.dumps(key_nb()).encode()  # noqa: E731
    # files
    case(Case("file_not_json", "invalid", "not valid JSON"), lambda env: b"this is not a notebook")
    case(Case("file_truncated", "invalid", "not valid JSON"), lambda env: key(env)[: len(key(env)) // 2])
    case(Case("file_empty", "invalid", "empty"), lambda env: b"")
    case(Case("file_not_notebook", "invalid", "not a Jupyter notebook"), lambda env: b'{"hello": "world"}')
    case(Case("file_nbformat3", "invalid", "unsupported notebook format"), lambda env: json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [{"cells": []}], "metadata": {}}).encode())
    case(Case("file_non_utf8", "invalid", "not UTF-8"), lambda env: b"\xff\xfe" + key(env)[2:])
    case(Case("file_200mb", "invalid", "larger than"), None)  # written separately: huge outputs
    case(Case("cell_deleted", "graded", "Net was not found", "lost:net"), lambda env: edited(lambda nb: _drop_cell(nb, "net")))
    case(Case("cell_locked_edited", "graded", points="full"), lambda env: edited(_edit_locked))
    case(Case("cell_metadata_tampered", "graded", points="full"), lambda env: edited(_tamper_metadata))
    case(Case("cells_reordered", "graded", points="full"), lambda env: edited(lambda nb: nb["cells"].reverse()))
    case(Case("cell_to_markdown", "graded", "evaluate was not found", "lost:evaluate", notes="turned into markdown"), lambda env: edited(lambda nb: _to_markdown(nb, "evaluate")))
    case(Case("cell_duplicate_ids", "graded", points="full", notes="both ran, in notebook order"), lambda env: edited(lambda nb: _duplicate(nb, "get_device")))
    # names
    case(Case("山田 太郎", "graded", points="full"), key)
    case(Case("$(touch pwned); rm -rf ~ |x", "graded", points="full"), key)
    case(Case("Dup", "invalid", "duplicate student id"), key)
    case(Case("dup", "invalid", "duplicate student id"), key)
    # code
    case(Case("code_syntax_error", "graded", "SyntaxError", "lost:evaluate"), lambda env: with_cell("evaluate", "def broken(:", at="end"))
    case(Case("code_missing_package", "graded", "ModuleNotFoundError", "lost:device"), lambda env: with_cell("get_device", "import tensorflow_that_is_not_installed", at="start"))
    case(Case("code_sys_exit", "graded", "SystemExit", "lost:device"), lambda env: with_cell("get_device", "import sys\nsys.exit(0)"))
    case(Case("code_raise_systemexit", "graded", "SystemExit", "lost:device"), lambda env: with_cell("get_device", "raise SystemExit(1)"))
    case(Case("code_keyboard_interrupt", "graded", "KeyboardInterrupt", "lost:device"), lambda env: with_cell("get_device", "raise KeyboardInterrupt"))
    case(Case("code_os_exit", "crashed", "ended early", "zero"), lambda env: with_cell("net", "import os\nos._exit(3)"))
    case(Case("code_loop_at_import", "graded", "took too long", "lost:evaluate"), lambda env: with_cell("evaluate", "while True:\n    pass"))
    case(Case("code_sleep_forever", "graded", "took too long", "lost:device"), lambda env: with_cell("get_device", "import time\ntime.sleep(10 ** 9)"))
    case(Case("code_loop_in_training", "graded", "took too long", "lost:training,device"), lambda env: replaced("train_one_epoch", "    model.train()\n", "    model.train()\n    while True:\n        pass\n"))
    case(Case("code_unstoppable_loop", "limit", "time limit", "less"), lambda env: replaced("train_one_epoch", "    model.train()\n",
                  "    model.train()\n    while True:\n        try:\n            while True:\n                pass\n"
                  "        except BaseException:\n            pass\n"))
    case(Case("code_memory_bomb", "limit", "memory", "less"), lambda env: replaced("train_one_epoch", "    model.train()\n",
                  "    model.train()\n    hoard = []\n    while True:\n        hoard.append(bytearray(50_000_000))\n"))
    # Each fork duplicates torch's memory in the watchdog's count: whichever limit it exhausts first stops it.
    case(Case("code_fork_bomb", "limit", "stopped: ", "zero"), lambda env: with_cell("get_device", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"))
    case(Case("code_background_process", "graded", points="full"), lambda env: with_cell("conv2d_output_size", "import subprocess\nsubprocess.Popen(['sleep', '600'], start_new_session=True)"))
    case(Case("code_10gb_file", "graded", "OSError", "lost:device"), lambda env: with_cell("get_device", "with open('/scratch/big', 'wb') as f:\n    for _ in range(10_000):\n"
                                 "        f.write(bytes(1_000_000))"))
    case(Case("code_print_gigabyte", "graded", points="full"), lambda env: with_cell("evaluate", "import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 1_000_000)"))
    case(Case("code_segfault", "crashed", "ended early", "zero"), lambda env: with_cell("net", "import ctypes\nctypes.string_at(0)"))
    # The sandbox's init belongs to another uid (refused), and kill(-1) reaches only the submission's own others.
    case(Case("code_kill_parent", "graded", points="full"), lambda env: with_cell("net", "import os, signal\nfor _pid in (os.getppid(), -1, 1):\n    try:\n"
                         "        os.kill(_pid, signal.SIGKILL)\n    except OSError:\n        pass"))
    case(Case("code_nan_loss", "graded", "not this epoch's mean loss", "lost:training"), lambda env: replaced("train_one_epoch", "return total / batches", "return float('nan')"))
    case(Case("code_wrong_types", "graded", "(other)", "lost:shapes,evaluate"), lambda env: _wrong_types())
    case(Case("code_billion_parameters", "limit", "memory", "less"), lambda env: replaced("net", "self.fc2 = nn.Linear(16, 10)", "self.fc2 = nn.Linear(16, 10)\n        self.big = nn.Linear(40_000, 25_000)"))
    case(Case("code_cuda_without_gpu", "graded", "RuntimeError", "lost:training,device") if DEVICE == "cpu" else
         Case("code_cuda_without_gpu", "graded", points="full"),  # on a GPU, 'cuda' is where the batches belong
         lambda env: replaced("train_one_epoch", "images.to(device), labels.to(device)", "images.to('cuda'), labels.to('cuda')"))
    # attacks
    case(Case("attack_read_secrets", "graded", points="full"), lambda env: with_cell("get_device", f"SECRETS = {env['secrets']!r}\n{READ_SECRETS}"))
    case(Case("attack_network", "graded", points="full"), lambda env: with_cell("get_device", "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
                                 "except OSError:\n    pass"))
    case(Case("attack_write_outside", "graded", points="full"), lambda env: with_cell("get_device", f"TARGETS = {env['targets']!r}\n{WRITE_OUTSIDE}"))
    # The loop no longer trains with the lecture's loss: the grader's replay (which does) does not lead to its
    # weights, so nothing the loop reported counts, its device moves included.
    case(Case("attack_patch_torch", "graded", "the weights are not the result of the loop", "lost:training,device"), lambda env: with_cell("train_one_epoch", "F.nll_loss = lambda output, target: (output * 0).sum()", at="end"))
    case(Case("attack_patch_harness", "graded", "batches were used", "lost:training,device"), lambda env: _patched_harness())
    case(Case("attack_forge_channel", "invalid", "written to by the submission"), lambda env: with_cell("evaluate", FORGE_CHANNEL))
    case(Case("attack_forge_results", "graded", points="full"), lambda env: with_cell("get_device", "for _p in ['results/x.json', '/sandbox/run/results.json', '/results.json']:\n"
                                 "    try:\n        open(_p, 'w').write('{\"total\": 100}')\n    except OSError:\n        pass"))
    case(Case("attack_embedded_labels", "graded", "test accuracy", "lost:training,device,evaluate"), lambda env: _embedded_labels())
    # the two ordinary students graded with them
    case(Case("good_key", "graded", points="full"), key)
    case(Case("good_partial", "graded", "which is not what PyTorch gives", "lost:shapes"), lambda env: json.dumps(mutants.mutant_notebook(mutants.MUTANTS[0])).encode())


def _wrong_types() -> bytes:
    answers = mutants.answers()
    conv = answers["conv2d_output_size"].replace("    return out if any(", "    return str(out[0])\n    return out if any(")
    evaluate = answers["evaluate"].replace("return correct / total", "return [correct / total]")
    return json.dumps(mutants.filled({"conv2d_output_size": conv, "evaluate": evaluate})).encode()


def _patched_harness() -> bytes:
    """A loop that does nothing, plus an attempt to replace the harness's training probe with a forger."""
    code = ("def train_one_epoch(model, loader, optimizer, device):\n    return 0.1\n\n"
            "import sys\nsys.modules['lab'].Probes.training = lambda self: None\n")
    return json.dumps(mutants.filled({"train_one_epoch": code})).encode()


def _embedded_labels() -> bytes:
    """Reports a perfect accuracy it never earned: no training, and evaluate returns 1.0."""
    code_train = "def train_one_epoch(model, loader, optimizer, device):\n    return 0.0\n"
    code_eval = "def evaluate(model, loader, device):\n    return 1.0\n"
    return json.dumps(mutants.filled({"train_one_epoch": code_train, "evaluate": code_eval})).encode()


build_cases()


def huge_notebook() -> bytes:
    nb = key_nb()
    cell = cell_of(nb, "test_shapes")
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x" * (200 << 20)}]
    return json.dumps(nb).encode()


def content_of(c: Case, build, env) -> bytes:
    return huge_notebook() if build is None else build(env)


def write_zip(path: Path, secrets_dir: Path, env: dict):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for c, build in CASES:
            z.writestr(f"{c.id}.ipynb", content_of(c, build, env))
        z.writestr("../escape_traversal.ipynb", b"{}")
        z.writestr("/tmp/escape_absolute.ipynb", b"{}")
        link = zipfile.ZipInfo("zip_symlink.ipynb")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, str(secrets_dir / "other.ipynb"))
        z.writestr("zip_bomb.ipynb", b"0" * (120 << 20))


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".venv" not in p.parts and "__pycache__" not in p.parts and ".git" not in p.parts:
            digest.update(str(p.relative_to(root)).encode() + hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def survivors() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            # a sandbox of its own, the fork server or a run it forked (which keeps the zygote's command line)
            if "/sandbox/run/harness.py" in cmd or "/sandbox/zygote/zygote.py" in cmd or cmd.startswith("sleep 600"):
                found.append(cmd)
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, mnist_dir):
    work = tmp_path_factory.mktemp("corpus")
    course = mutants.course_copy(work, {
        "wall_seconds = 300": f"wall_seconds = {WALL}", "memory_mb = 3072": "memory_mb = 1500",
        "cell_seconds = 60": "cell_seconds = 10", "call_seconds = 10": "call_seconds = 5",
        "train_seconds = 240": "train_seconds = 30"})
    secrets_dir = work / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "other.ipynb").write_text("OTHER-STUDENT-SECRET")
    (secrets_dir / "gradebook.db").write_text("GRADEBOOK-SECRET")
    secrets = [str(course / "hidden" / "checks_shapes.py"), str(course / "hidden" / "probes.py"),
               str(mnist_dir / "t10k-labels-idx1-ubyte.gz"), str(secrets_dir / "other.ipynb"),
               str(secrets_dir / "gradebook.db"), str(Path.home() / ".ssh" / "id_rsa")]
    targets = [str(REPO_ROOT / "forged.txt"), str(work / "forged.txt"), "/sandbox/data/forged", "/usr/forged"]
    env = {"secrets": secrets, "targets": targets}
    archive = work / "class.zip"
    write_zip(archive, secrets_dir, env)

    # The batch's own temporary folder (the grader makes its scratch folders with tempfile): what it leaves
    # behind is looked for there, not among whatever else runs on this machine. World-readable: the
    # sandboxes' uids read the folders the grader mounts from it.
    own_tmp = Path(tempfile.mkdtemp(prefix="hostile-tmp-"))
    own_tmp.chmod(0o755)
    environ = {**os.environ, "MNIST_DIR": str(mnist_dir), "TMPDIR": str(own_tmp)}
    before = tree_digest(course), tree_digest(REPO_ROOT), sorted(p.name for p in own_tmp.iterdir())
    out = work / "out"
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(archive), "--assignment", str(course),
                          "--out", str(out), "--lang", "en", "--jobs", JOBS, "--device", DEVICE],
                         capture_output=True, text=True, cwd=work, env=environ)
    after = tree_digest(course), tree_digest(REPO_ROOT), sorted(p.name for p in own_tmp.iterdir())
    alive = survivors()

    # The same two good students graded alone, for comparison.
    alone = work / "alone"
    alone.mkdir()
    for c, build in CASES:
        if c.id in ("good_key", "good_partial"):
            (alone / f"{c.id}.ipynb").write_bytes(content_of(c, build, env))
    solo = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(alone), "--assignment", str(course),
                           "--out", str(work / "alone-out"), "--lang", "en", "--jobs", JOBS, "--device", DEVICE],
                          capture_output=True, text=True, cwd=work, env=environ)
    assert solo.returncode == 0, solo.stderr[-3000:]
    return {"run": run, "out": out, "work": work, "before": before, "after": after, "alive": alive,
            "results": {r.student_id: r for r in ResultStore(out).load_all()},
            "alone": {r.student_id: r for r in ResultStore(work / "alone-out").load_all()}}


def test_batch_completes_with_a_row_for_everyone(corpus):
    run = corpus["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    results = corpus["results"]
    assert len(CASES) >= 35
    assert {c.id for c, _ in CASES} <= set(results)
    with (corpus["out"] / "grades.csv").open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results) and all(row["status"] for row in rows)
    unsafe = [r for sid, r in results.items() if r.reason and "unsafe path" in r.reason.en]
    assert len(unsafe) == 2 and all(r.status == "invalid" for r in unsafe)
    assert "symbolic link" in results["zip_symlink"].reason.en
    assert "larger than" in results["zip_bomb"].reason.en


def test_good_students_grade_as_when_alone(corpus):
    for name in ("good_key", "good_partial"):
        together, alone = corpus["results"][name], corpus["alone"][name]
        assert [(c.name, c.points) for c in together.checks] == [(c.name, c.points) for c in alone.checks]
        assert together.parts == alone.parts and together.status == alone.status


@pytest.mark.parametrize("c", [c for c, _ in CASES], ids=lambda c: c.id)
def test_each_case(corpus, c):
    result = corpus["results"][c.id]
    key = corpus["results"]["good_key"]
    assert result.status == c.status, (c.id, result.status, result.reason)
    said = " ".join([result.reason.en if result.reason else ""] +
                    [ch.message.en for ch in result.checks if ch.message and not ch.passed])
    assert c.reason in said, (c.id, said[:2000])
    if result.reason:
        assert result.reason.ja and result.reason.en  # every reason in both languages
    if c.points == "zero":
        assert result.total == 0, (c.id, result.parts)
    elif c.points == "full":
        assert result.parts == key.parts and result.total == key.total == 100, (c.id, result.parts)
    elif c.points == "less":
        assert 0 < result.total < key.total, (c.id, result.parts)
    else:
        lost = set(c.points.removeprefix("lost:").split(","))
        assert {p for p in key.parts if result.parts[p] < key.parts[p]} == lost, (c.id, result.parts)
    if c.notes:
        assert any(c.notes in n.en for n in result.notes), (c.id, result.notes)


def test_limits_hold_within_margin(corpus):
    results = corpus["results"]
    for name in ("code_unstoppable_loop", "code_memory_bomb", "code_fork_bomb", "code_billion_parameters"):
        assert results[name].seconds <= WALL + MARGIN, (name, results[name].seconds)


def test_nothing_survives_and_nothing_outside_scratch_changes(corpus):
    assert corpus["alive"] == []
    course_before, repo_before, tmp_before = corpus["before"]
    course_after, repo_after, tmp_after = corpus["after"]
    assert course_before == course_after
    assert repo_before == repo_after
    assert tmp_before == tmp_after == []  # nothing left in the batch's temporary folder
    assert not (corpus["work"] / "forged.txt").exists() and not (REPO_ROOT / "forged.txt").exists()
    assert not Path("/tmp/locked_cell_ran").exists() and not Path("/tmp/escape_absolute.ipynb").exists()
    assert not list(corpus["work"].rglob("pwned")) and not (corpus["work"].parent / "escape_traversal.ipynb").exists()


def test_feedback_leaks_no_secret(corpus):
    pages = "".join(p.read_text(encoding="utf-8") for p in (corpus["out"] / "feedback").iterdir())
    for secret in ("OTHER-STUDENT-SECRET", "GRADEBOOK-SECRET", "def judge_group", "PROBES = {"):
        assert secret not in pages
