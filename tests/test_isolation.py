"""From inside a grading sandbox, set up exactly as `autograder grade` sets it up (a sandbox of its own, or a
run forked by the batch's fork server), a submission cannot reach the hidden checks, the test labels, another
submission, the gradebook, the network, the fork server, or write outside scratch; and nothing it leaves on
its disks is there for the next one."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from autograder import forkserver, observe
from autograder.grade import Grader, Options
from autograder.sanitize import Cell

from repo import REPO_ROOT

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

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
# What the run before this one may have left for it, then the same left for the run after it.
for path in ("/scratch/left", "/tmp/left", "/dev/shm/left"):
    found["left " + path] = os.path.exists(path)
    with open(path, "w") as f:
        f.write("for the next student")
found["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
found["fds"] = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        found["fds"][fd] = os.readlink("/proc/self/fd/" + fd)
    except OSError:  # the descriptor listdir itself used
        pass
found["uid"] = os.getuid()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
# Permitted, effective, ambient. (The inheritable set keeps what bwrap kept; with no_new_privs and no ambient
# capabilities, no exec can turn it into a permitted one.)
found["capabilities"] = [status[k].strip() for k in ("CapPrm", "CapEff", "CapAmb")]
found["no_new_privs"] = status["NoNewPrivs"].strip()
print("FOUND", json.dumps(found, sort_keys=True), flush=True)
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


@pytest.fixture(scope="module", params=["own sandbox", "fork server"])
def run_mode(request, grader, assignment):
    """How a run is started: a sandbox of its own, or forked by a fork server (as root with bubblewrap)."""
    if request.param == "own sandbox":
        yield None
        return
    if not forkserver.usable("cpu"):
        pytest.fail("the fork server needs root and bubblewrap here, as CI has (.ci/run installs bubblewrap)")
    server = observe.start_fork_server(assignment, grader.settings, grader.data)
    yield server
    server.close()


def test_sandbox_sees_nothing_it_should_not(grader, run_mode, assignment, mnist_dir, tmp_path):
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
              "write_zygote": "/sandbox/zygote/harness.py",
              "write_repo": str(REPO_ROOT / "forged.txt"), "write_usr": "/usr/forged.txt"}
    source = f"TARGETS = {json.dumps(json.dumps(targets))}\nWRITES = {json.dumps(json.dumps(writes))}\nPORT = {port}\n"
    plan = observe.plan_for(assignment, [Cell("setup", source + PROBE)], grader.probes.SANDBOX,
                            grader.settings, grader.data)
    seen = []
    for _ in range(2):  # two students in a row
        run, obs = observe.run(plan, limits=assignment.limits, data=grader.data, settings=grader.settings,
                               server=run_mode)
        assert run.sandboxed
        [cell] = obs.all("cell")
        assert cell["ok"], cell
        [line] = [x for x in run.stdout.splitlines() if x.startswith("FOUND ")]
        seen.append(json.loads(line.removeprefix("FOUND ")))
    server.close()
    for found in seen:
        assert found.pop("scratch") == "ok"
        assert found.pop("network") != "CONNECTED"
        # Only the run's own processes: never the fork server nor another run (bwrap's own pid 1 at most).
        assert set(found.pop("pids")) <= {1, 2}, found
        # stdin, stdout, stderr and the harness's record channel; no socket or status pipe of the fork server
        fds = found.pop("fds")
        assert len(fds) <= 4 and not any(t.startswith("socket:") for t in fds.values()), fds
        assert found.pop("uid") != 0 or os.geteuid() != 0
        assert found.pop("capabilities") == ["0000000000000000"] * 3
        assert found.pop("no_new_privs") == "1"  # no setuid binary can give anything back
        left = {k: found.pop(k) for k in list(found) if k.startswith("left ")}
        assert all(outcome not in ("READ", "WROTE") for outcome in found.values()), found
        if found is seen[1]:
            assert not any(left.values()), f"the run before left files for this one: {left}"
    assert not (REPO_ROOT / "forged.txt").exists()
    assert not any(p.name.startswith("forged") for p in grader.data.path.iterdir())
