"""Forgeries by a student who has read the harness, graded in ONE batch through the real `autograder grade`:

- the frame walk: evaluate's cell climbs to run_submission's locals, runs the probes itself, trains a network
  its own way (Adam, batches of 256, two passes), and writes perfect training and evaluate records before
  os._exit(0), while its own train_one_epoch and evaluate are broken;
- weights copied in: a textbook loop, then weights trained elsewhere loaded over the result;
- a record built to stall the judge (a parameter shape of 2,500 dimensions of 10**599);
- a shape function returning a tuple nested 3,000 deep;
- a submission whose hidden checks run past the judge's limit (a course copy with a check that stalls on it).

Each is compared with what it deserves: the broken notebook without its forging code, graded in the same
batch; and the ordinary students must grade exactly as alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from autograder.results import ResultStore

import mutants

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

BROKEN_TRAIN = "def train_one_epoch(model, loader, optimizer, device):\n    return 0.0\n"
BROKEN_EVALUATE = "def evaluate(model, loader, device):\n    return 1.0\n"

# Run at import of evaluate's cell: everything the grader would see, written by the submission itself.
FRAME_WALK = r'''
import os, sys
_f = sys._getframe()
while _f is not None and "emit" not in _f.f_locals:
    _f = _f.f_back
_L = _f.f_locals
_emit, _plan, _torch, _data, _ns = _L["emit"], _L["plan"], _L["torch"], _L["data"], _L["namespace"]
_h, _lab = sys.modules["harness"], sys.modules["lab"]
_emit("cell", id="evaluate", ok=True, seconds=0.1)
_p = _lab.Probes(_torch, _ns, _plan, _emit, _data)
_p.shapes(); _p.device_switch(); _p.net()
_images, _labels = _data
_n = len(_images) - _plan["training"]["holdout"]
_net = _lab.LectureNet(_torch)
_opt = _torch.optim.Adam(_net.parameters(), lr=3e-3)
for _epoch in range(2):
    for _s in range(0, _n, 256):
        _opt.zero_grad()
        _torch.nn.functional.nll_loss(_net(_images[_s:_s + 256]), _labels[_s:_s + 256]).backward()
        _opt.step()
_batches = -(-_n // 64)
_emit("training", ok=True, error=None, returned=[{"type": "float", "value": 0.25}], substituted_net=False,
      seconds=2.0, events="e" + "bfzks" * _batches, moves={"images": _batches, "labels": _batches, "wrong_device": 0},
      forwards={"count": _batches, "unmoved": 0, "model_elsewhere": 0, "train_mode": _batches, "grad_enabled": _batches})
_emit("weights", weights=_h.state_b64(_torch, _net))
_eval_x, _eval_y = _images[_n:_n + _plan["eval_images"]], _labels[_n:_n + _plan["eval_images"]]
with _torch.no_grad():
    _acc = (_net(_eval_x).argmax(1) == _eval_y).float().mean().item()
_emit("evaluate", ok=True, error=None, returned={"type": "float", "value": _acc}, weights=_h.state_b64(_torch, _net),
      events="", moves={"images": 3, "labels": 3, "wrong_device": 0},
      forwards={"count": 3, "unmoved": 0, "model_elsewhere": 0, "train_mode": 0, "grad_enabled": 0})
_emit("done")
_emit.flush()
os._exit(0)
'''

# A textbook loop, then weights from elsewhere over its result (here: trained with Adam at import, from the
# raw training file; a real cheat might bring weights trained on the test set).
COPY_IN = r'''
import numpy as _np
_raw = _np.fromfile("/sandbox/data/train-images.u8", dtype=_np.uint8)[:20000 * 784]
_lab = _np.fromfile("/sandbox/data/train-labels.u8", dtype=_np.uint8)[:20000]
_x = ((torch.tensor(_raw).float().div(255) - 0.1307) / 0.3081).view(-1, 1, 28, 28)
_y = torch.tensor(_lab).long()
_better = Net()
_opt = torch.optim.Adam(_better.parameters(), lr=3e-3)
for _s in range(0, 20000, 128):
    _opt.zero_grad()
    F.nll_loss(_better(_x[_s:_s + 128]), _y[_s:_s + 128]).backward()
    _opt.step()

def train_one_epoch(model, loader, optimizer, device):
    model.train()
    total, batches = 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.item()
        batches += 1
    model.load_state_dict(_better.state_dict())
    return total / batches
'''

STALL = r'''
import os, sys
_f = sys._getframe()
while _f is not None and "emit" not in _f.f_locals:
    _f = _f.f_back
_emit = _f.f_locals["emit"]
_emit("cell", id="net", ok=True, seconds=0.1)
_emit("net", ok=True, shape_calls=[], layers={}, params=[{"name": "w", "shape": [10 ** 599] * 2500, "trainable": True}])
_emit("done")
_emit.flush()
os._exit(0)
'''

DEEP = '''
import sys
sys.setrecursionlimit(20000)

def conv2d_output_size(size, kernel_size, stride=1, padding=0, dilation=1):
    value = 26
    for _ in range(3000):
        value = (value,)
    return value
'''

STALL_CHECK = '''
import time

import pytest


@pytest.mark.check("evaluate", "（テスト用）", "(a test's own check)", weight=0)
def check_stalls_on_the_marked_one(ctx):
    if any("STALL THE JUDGE" in cell.source for cell in ctx.sanitized.cells):
        time.sleep(60)
'''


def notebooks() -> dict[str, dict]:
    answers = mutants.answers()
    broken = {"train_one_epoch": BROKEN_TRAIN, "evaluate": BROKEN_EVALUATE}
    return {
        "good_key": mutants.filled(),
        "good_partial": mutants.mutant_notebook(mutants.MUTANTS[0]),
        "frame_walk": mutants.filled({"train_one_epoch": BROKEN_TRAIN, "evaluate": BROKEN_EVALUATE + FRAME_WALK}),
        "frame_walk_deserves": mutants.filled(broken),
        "copied_in": mutants.filled({"train_one_epoch": COPY_IN}),
        "stall_record": mutants.filled({"net": answers["net"] + "\n" + STALL}),
        "deep_tuple": mutants.filled({"conv2d_output_size": DEEP}),
        "stalls_the_judge": mutants.filled({"get_device": answers["get_device"] + "\n# STALL THE JUDGE\n"}),
    }


JUDGE_SECONDS = 20


def grade(folder, course, out, env):
    return subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(folder), "--assignment", str(course),
                           "--out", str(out), "--lang", "en", "--jobs", "2", "--device", "cpu"],
                          capture_output=True, text=True, cwd=folder.parent, env=env)


@pytest.fixture(scope="module")
def batch(tmp_path_factory, mnist_dir):
    work = tmp_path_factory.mktemp("forgery")
    course = mutants.course_copy(work, {"[judge]\nseconds = 120": f"[judge]\nseconds = {JUDGE_SECONDS}"})
    (course / "hidden" / "checks_stall.py").write_text(STALL_CHECK)
    folder = work / "class"
    folder.mkdir()
    for name, nb in notebooks().items():
        (folder / f"{name}.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    env = {**os.environ, "MNIST_DIR": str(mnist_dir)}
    started = time.monotonic()
    run = grade(folder, course, work / "out", env)
    seconds = time.monotonic() - started
    alone = work / "alone"
    alone.mkdir()
    for name in ("good_key", "good_partial"):
        shutil.copy(folder / f"{name}.ipynb", alone)
    solo = grade(alone, course, work / "alone-out", env)
    assert solo.returncode == 0, solo.stderr[-3000:]
    return {"run": run, "seconds": seconds,
            "results": {r.student_id: r for r in ResultStore(work / "out").load_all()},
            "alone": {r.student_id: r for r in ResultStore(work / "alone-out").load_all()}}


def lost(result) -> str:
    return " ".join(c.message.en for c in result.checks if c.message and not c.passed)


def test_the_batch_completes_and_good_students_grade_as_alone(batch):
    assert batch["run"].returncode == 0, batch["run"].stderr[-3000:]
    results = batch["results"]
    assert set(results) == set(notebooks())
    for name in ("good_key", "good_partial"):
        together, alone = results[name], batch["alone"][name]
        assert [(c.name, c.points) for c in together.checks] == [(c.name, c.points) for c in alone.checks]
        assert together.parts == alone.parts and together.status == alone.status
    assert results["good_key"].total == 100


def test_the_frame_walk_scores_what_its_broken_loop_deserves(batch):
    forged, deserved = batch["results"]["frame_walk"], batch["results"]["frame_walk_deserves"]
    for part in ("shapes", "net", "device", "training"):
        assert forged.parts[part] == deserved.parts[part], (part, forged.parts, deserved.parts)
    assert forged.parts["training"] == 0
    assert "the weights are not the result of the loop" in lost(forged)
    # What stays: evaluate's return value is computed inside the run, and this forger computed the right
    # accuracy itself; evaluate's mode and no_grad are only observed (README, "Threat model").
    observed_only = sum(c.max_points for c in forged.checks if c.part == "evaluate" and c.name in ("eval_mode", "no_grad"))
    value = next(c.max_points for c in forged.checks if c.name == "evaluate_value")
    assert forged.parts["evaluate"] <= deserved.parts["evaluate"] + observed_only + value


def test_copied_in_weights_earn_no_accuracy_and_the_report_says_why(batch):
    result = batch["results"]["copied_in"]
    accuracy = next(c for c in result.checks if c.name == "accuracy")
    assert accuracy.points == 0 and "the weights are not the result of the loop" in accuracy.message.en
    assert result.parts["training"] == 0
    for part in ("shapes", "net", "evaluate"):
        assert result.parts[part] == batch["results"]["good_key"].parts[part]


def test_a_record_built_to_stall_the_judge_is_refused_at_once(batch):
    result = batch["results"]["stall_record"]
    net = [c for c in result.checks if c.part == "net"]
    assert net and all("the record of Net() could not be read" in c.message.en for c in net), lost(result)
    assert result.total == 0  # it wrote "done" and left before any probe ran
    assert batch["seconds"] < 600  # nothing waited for hours (the judge's own limit is asserted below)


def test_a_tuple_nested_3000_deep_costs_the_shapes_part_only(batch):
    result, key = batch["results"]["deep_tuple"], batch["results"]["good_key"]
    assert result.status == "graded"
    assert result.parts["shapes"] < 20
    assert {p: v for p, v in result.parts.items() if p != "shapes"} == {p: v for p, v in key.parts.items() if p != "shapes"}


def test_checks_past_the_judges_limit_make_a_limit_row_and_the_batch_goes_on(batch):
    result = batch["results"]["stalls_the_judge"]
    assert result.status == "limit" and result.total == 0
    assert f"the grader's limit of {JUDGE_SECONDS} s" in result.reason.en and result.reason.ja
