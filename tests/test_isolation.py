"""From inside a grading sandbox, set up exactly as `autograder grade` sets it up, a submission cannot reach
the hidden checks, the test labels, another submission, the gradebook, the network, or write outside scratch."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from autograder import observe
from autograder.config import REPO_ROOT
from autograder.grade import Grader, Options
from autograder.sanitize import Cell

PROBE = r'''
import json, os, socket
found = {}
for name, path in json.loads(TARGETS).items():
    try:
        with open(path, "rb") as f:
            f.read(1)
        found[name] = "READ"
    except OSError as exc:
        found[name] = exc.errno
for name, path in json.loads(WRITES).items():
    try:
        with open(path, "w") as f:
            f.write("x")
        found[name] = "WROTE"
    except OSError as exc:
        found[name] = exc.errno
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    found["network"] = "CONNECTED"
except OSError as exc:
    found["network"] = exc.errno
with open("/scratch/mine.txt", "w") as f:
    f.write("scratch is writable")
found["scratch"] = "ok"
raise RuntimeError(json.dumps(found, sort_keys=True))
'''


@pytest.fixture(scope="module")
def grader(assignment, mnist_dir, monkeypatch_module):
    monkeypatch_module.setenv("MNIST_DIR", str(mnist_dir))
    g = Grader(assignment, Options(jobs=1, require_sandbox=True))
    yield g
    g.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_sandbox_sees_nothing_it_should_not(grader, assignment, mnist_dir, tmp_path):
    other = tmp_path / "other_student.ipynb"
    other.write_text("{}")
    gradebook = tmp_path / "gradebook.db"
    gradebook.write_text("db")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    targets = {
        "hidden_checks": str(assignment.folder / "hidden" / "checks_shapes.py"),
        "hidden_probes": str(assignment.folder / "hidden" / "probes.py"),
        "test_labels": str(mnist_dir / "t10k-labels-idx1-ubyte.gz"),
        "other_submission": str(other),
        "gradebook": str(gradebook),
        "course_config": str(REPO_ROOT / "assignments" / "cnn_mnist" / "assignment.toml"),
        "ssh": "/root/.ssh/id_rsa",
    }
    writes = {"write_data": "/sandbox/data/forged.u8", "write_run": "/sandbox/run/forged.json",
              "write_repo": str(REPO_ROOT / "forged.txt"), "write_usr": "/usr/forged.txt"}
    source = f"TARGETS = {json.dumps(json.dumps(targets))}\nWRITES = {json.dumps(json.dumps(writes))}\nPORT = {port}\n"
    plan = observe.plan_for(assignment, [Cell("setup", source + PROBE)], grader.probes.SHAPE_PROBES,
                            grader.settings, grader.data)
    run, obs = observe.run(plan, limits=assignment.limits, data=grader.data, settings=grader.settings)
    server.close()
    assert run.sandboxed
    [cell] = obs.all("cell")
    found = json.loads(cell["error"]["message"])
    assert found.pop("scratch") == "ok"
    assert found.pop("network") != "CONNECTED"
    assert all(outcome not in ("READ", "WROTE") for outcome in found.values()), found
    assert not (REPO_ROOT / "forged.txt").exists()
    assert not any(p.name.startswith("forged") for p in grader.data.path.iterdir())
