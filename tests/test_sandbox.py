"""Tests for autograder.sandbox, against the real bubblewrap.

Tests that need a working bwrap fail (with the probe's reason) where it can not
run, e.g. an Ubuntu >= 23.10 host that restricts unprivileged user namespaces.
The fallback tests run everywhere.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest

from autograder import sandbox as sb
from autograder.sandbox import Limits, Mount, SandboxUnavailable, bwrap_available, run_sandboxed

pytestmark = [pytest.mark.sandbox]

PY = sys.executable
LIMITS = Limits(wall_seconds=60)


@pytest.fixture
def need_bwrap():
    # A failure, not a skip: grading's guarantees rest on the sandbox, and CI installs bubblewrap.
    if not bwrap_available():
        pytest.fail(f"bubblewrap unusable here: {sb.launch.probe()}")


@pytest.fixture
def no_bwrap(monkeypatch):
    """Force the unsandboxed fallback (and silence its warning)."""
    monkeypatch.setattr(sb.launch, "bwrap_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
        yield


def py(code: str, *args: str, limits: Limits = LIMITS, mounts=(), **kw):
    return run_sandboxed([PY, "-c", textwrap.dedent(code), *args], mounts=list(mounts),
                         limits=limits, **kw)


def shared_dir(path: Path) -> Path:
    # As root the sandbox runs under an unrelated uid: mounts must be world-readable.
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def pids_with(token: str) -> list[int]:
    """Processes whose command line contains `token`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def run_in_thread(fn):
    """Start fn() in a thread; returns a function that joins and returns its result."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", fn()), daemon=True)
    thread.start()

    def join(timeout=120):
        thread.join(timeout)
        assert not thread.is_alive(), "run_sandboxed did not return"
        return box["result"]
    return join


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# A program that leaves a detached grandchild (double fork + setsid) that
# sleeps with `token` in its command line, then itself sleeps or exits.
DAEMONIZE = """
import os, sys, time
token, then = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(3600)", token])
    os._exit(0)
time.sleep(1.0)  # let the daemon start and the test see it
if then == "sleep":
    time.sleep(3600)
print("parent done")
"""


# ---------------------------------------------------------------- isolation
def test_probe_and_identity(need_bwrap):
    r = py("""
        import os, sys
        print(os.getuid(), os.getcwd(), os.environ["HOME"], repr(os.environ["SANDBOX_ROOT"]))
        print(sorted(os.environ))
    """)
    assert r.returncode == 0, r.stderr
    assert r.sandboxed and r.killed_for is None
    uid, cwd, home, root = r.stdout.splitlines()[0].split()
    if os.geteuid() == 0:
        assert int(uid) != 0  # dropped to an unprivileged uid
    assert (cwd, home, root) == ("/scratch", "/scratch", "''")
    assert "SSH_AUTH_SOCK" not in r.stdout and "PYTEST_CURRENT_TEST" not in r.stdout


def test_host_files_are_invisible(need_bwrap, tmp_path):
    secret = tmp_path / ".ssh" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("TOP SECRET")
    secret.chmod(0o644)
    probes = [str(secret), str(Path(__file__).resolve()), "/etc/passwd", "/etc/shadow",
              str(Path(__file__).resolve().parents[1] / "pyproject.toml")]
    r = py("""
        import sys
        for path in sys.argv[1:]:
            try:
                open(path).read()
                print("READ", path)
            except OSError as exc:
                print("blocked", path, type(exc).__name__)
    """, *probes)
    assert r.returncode == 0, r.stderr
    assert "READ" not in r.stdout and r.stdout.count("blocked") == len(probes)
    assert "TOP SECRET" not in r.stdout


def test_only_allowed_top_level_dirs(need_bwrap):
    r = py("import os; print(sorted(os.listdir('/')))")
    visible = set(eval(r.stdout))
    assert {"usr", "proc", "dev", "scratch", "tmp"} <= visible
    assert not visible & {"home", "var", "opt", "mnt", "srv", "sys", "boot", "run"} - {
        Path(sys.prefix).parts[1], Path(sys.base_prefix).parts[1]}


def test_no_network(need_bwrap):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        r = py("""
            import socket, sys
            for host in ("127.0.0.1", "1.1.1.1"):
                try:
                    socket.create_connection((host, int(sys.argv[1])), timeout=5)
                    print("CONNECTED", host)
                except OSError as exc:
                    print("blocked", host, exc)
        """, str(port))
        assert r.returncode == 0, r.stderr
        assert "CONNECTED" not in r.stdout and r.stdout.count("blocked") == 2
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever reached the host's listener
    finally:
        server.close()


def test_read_only_mount_and_writable_scratch(need_bwrap, tmp_path):
    ro = shared_dir(tmp_path / "ro")
    (ro / "input.txt").write_text("hello from the host")
    (ro / "input.txt").chmod(0o644)
    rw = shared_dir(tmp_path / "rw")
    rw.chmod(0o1777)
    r = py("""
        import os
        print(open("/sandbox/ro/input.txt").read())
        for path in ["/sandbox/ro/new.txt", "/sandbox/ro/input.txt", "/usr/evil", "/evil",
                     "/etc/evil", "/dev/evil", os.path.realpath(os.sys.executable) + ".evil"]:
            try:
                open(path, "a").write("x")
                print("WROTE", path)
            except OSError:
                print("refused", path)
        for path in ["/scratch/ok.txt", "/tmp/ok.txt", "/dev/shm/ok", "/sandbox/rw/out.txt"]:
            open(path, "w").write("ok")
            print("wrote", path)
    """, mounts=[Mount(ro, "/sandbox/ro"), Mount(rw, "/sandbox/rw", writable=True)])
    assert r.returncode == 0, r.stderr
    assert "hello from the host" in r.stdout
    assert "WROTE" not in r.stdout and r.stdout.count("refused") == 7
    assert r.stdout.count("wrote") == 4
    assert (rw / "out.txt").read_text() == "ok"
    assert sorted(p.name for p in ro.iterdir()) == ["input.txt"]


def test_scratch_is_size_limited(need_bwrap):
    r = py("""
        try:
            with open("/scratch/big", "wb") as f:
                for _ in range(32):
                    f.write(bytes(1 << 20))
            print("WROTE ALL")
        except OSError as exc:
            print("full", exc.errno)
    """, limits=Limits(wall_seconds=60, scratch_mb=8))
    assert r.returncode == 0, r.stderr
    assert "full" in r.stdout and r.killed_for is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches uid")
def test_root_mounts_must_be_world_readable(need_bwrap, tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(ValueError, match="readable by others"):
        py("pass", mounts=[Mount(private, "/sandbox/private")])


def test_import_torch(need_bwrap):
    r = py("import torch; print(torch.tensor([1.0, 2.0]).sum().item())",
           limits=Limits(wall_seconds=120), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3.0"
    assert r.peak_rss_mb > 0


# ---------------------------------------------------------------- limits
def test_wall_time_kill(need_bwrap):
    token = f"marker-{uuid.uuid4()}"
    join = run_in_thread(lambda: py(DAEMONIZE, token, "sleep",
                                    limits=Limits(wall_seconds=5)))
    assert wait_for(lambda: pids_with(token)), "daemon never started"
    r = join()
    assert r.killed_for == "time" and r.returncode is None
    assert 5 <= r.seconds < 20
    assert pids_with(token) == []


def test_background_process_does_not_outlive_run(need_bwrap):
    token = f"marker-{uuid.uuid4()}"
    join = run_in_thread(lambda: py(DAEMONIZE, token, "exit"))
    assert wait_for(lambda: pids_with(token)), "daemon never started"
    r = join()
    assert r.returncode == 0 and r.killed_for is None, r.stderr
    assert "parent done" in r.stdout
    assert r.seconds < 30
    assert pids_with(token) == []


def test_memory_kill(need_bwrap):
    r = py("""
        chunks = []
        while True:
            chunks.append(b"\\x01" * (10 << 20))
    """, limits=Limits(wall_seconds=60, memory_mb=300))
    assert r.killed_for == "memory", (r.returncode, r.stderr)
    assert 300 <= r.peak_rss_mb < 2000
    assert r.seconds < 30


def test_fork_bomb_is_contained(need_bwrap):
    token = f"marker-{uuid.uuid4()}"
    r = py("""
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """, token, limits=Limits(wall_seconds=60, processes=32))
    assert r.killed_for == "processes", (r.returncode, r.stderr[-2000:])
    assert r.seconds < 30
    assert pids_with(token) == []


def test_large_output_is_truncated_without_hanging(need_bwrap):
    r = py("""
        import sys
        line = "x" * 1023 + "\\n"
        for _ in range(50 * 1024):
            sys.stdout.write(line)
        sys.stdout.flush()
        sys.stderr.write("finished\\n")
    """, limits=Limits(wall_seconds=60, output_bytes=1_000_000))
    assert r.returncode == 0 and r.killed_for is None
    assert r.output_truncated
    assert len(r.stdout) == 500_000 and set(r.stdout) <= {"x", "\n"}
    assert r.stderr == "finished\n"
    assert r.seconds < 30


def test_output_pipes_hold_a_megabyte(need_bwrap):
    """The grader drains output in rounds that each need the GIL: 1 MB pipes make a gigabyte of print() a
    thousand rounds, not sixteen thousand (sandbox.watchdog.READ_CHUNK; bench/pipe_drain.py measures the difference)."""
    r = py("""
        import fcntl, sys
        print(*(fcntl.fcntl(f.fileno(), fcntl.F_GETPIPE_SZ) for f in (sys.stdout, sys.stderr)))
        print(fcntl.fcntl(3, fcntl.F_GETPIPE_SZ))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(1 << 20)] * 3


def test_data_channel_round_trip(need_bwrap):
    payload_code = "bytes(range(256)) * 20000"  # 5 MB, far beyond a pipe's buffer
    r = py(f"""
        import os
        data = memoryview({payload_code})
        while data:
            data = data[os.write(3, data):]
        print("sent")
    """)
    assert r.returncode == 0, r.stderr
    assert r.data == bytes(range(256)) * 20000 and not r.data_truncated
    r = py("import os; os.write(3, b'y' * 5000)", data_bytes=1000)
    assert r.data == b"y" * 1000 and r.data_truncated


def test_missing_command(need_bwrap):
    r = run_sandboxed(["/no/such/program"], mounts=[], limits=LIMITS)
    assert r.returncode == 127 and "cannot execute" in r.stderr


TURN = """
    import os, sys, time
    def autogroup():
        try:
            return open("/proc/self/autogroup").read().split()[-1]
        except OSError:
            return "none"
    time.sleep(0.3)  # the watchdog sets the session's group on its first round
    before = (os.getpriority(os.PRIO_PROCESS, 0), autogroup())
    waited = time.monotonic()
    got = sys.stdin.buffer.read()  # one byte, then end of file
    waited = time.monotonic() - waited
    time.sleep(0.3)  # the group is moved on the watchdog's next round
    after = (os.getpriority(os.PRIO_PROCESS, 0), autogroup())
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 9)
        lower = "allowed"
    except OSError:
        lower = "refused"
    print(*before, repr(got), round(waited, 1), *after, lower)
    time.sleep(float(sys.argv[1]))
"""


def turn_after(seconds: float):
    """A turn that comes `seconds` after the first time it is asked for, and counts how often it was asked."""
    asked = []

    def turn():
        asked.append(time.monotonic())
        return asked[-1] - asked[0] >= seconds

    return turn, asked


@pytest.mark.parametrize("mode", ["bwrap", "fallback"])
def test_a_run_waits_for_its_turn_at_the_lowest_priority_and_its_clock_starts_then(mode, request):
    request.getfixturevalue("need_bwrap" if mode == "bwrap" else "no_bwrap")
    turn, asked = turn_after(3)
    # Waiting 3 s under a 2 s wall limit is not a time-out: the clock starts at the turn.
    r = py(TURN, "0.5", limits=Limits(wall_seconds=2), turn=turn)
    assert r.killed_for is None and r.returncode == 0, r.stderr
    nice, group, got, waited, nice_after, group_after, lower = r.stdout.split()
    root = os.geteuid() == 0
    # Back to +10 (only root may lower a nice value), never below; the fallback as root is root.
    assert (nice, got, nice_after) == ("19", "b'\\n'", "10" if root else "19")
    assert lower == ("allowed" if mode == "fallback" and root else "refused")
    assert group in ("19", "none") and group_after in ("10", "none")
    assert float(waited) >= 2.5 and len(asked) > 10
    assert 0.5 <= r.seconds < 2.5  # the run's own time, not the wait


def test_a_run_past_its_turn_is_still_timed(need_bwrap):
    turn, _ = turn_after(0.5)
    r = py(TURN, "60", limits=Limits(wall_seconds=2), turn=turn)
    assert r.killed_for == "time" and 2 <= r.seconds < 6


def test_a_cancelled_turn_kills_the_waiting_run(need_bwrap):
    token = f"marker-{uuid.uuid4()}"
    calls = []

    def turn():
        calls.append(1)
        if len(calls) > 20:
            raise sb.TurnCancelled
        return False

    r = py("import sys, time; sys.stdin.read(); print('ran'); time.sleep(60)", token, turn=turn)
    assert r.killed_for == "cancelled" and "ran" not in r.stdout and r.seconds < 10
    assert pids_with(token) == []


def test_a_run_that_dies_waiting_never_takes_its_turn(need_bwrap):
    asked = []
    r = py("import sys; sys.exit(3)", turn=lambda: asked.append(1) and False)
    assert r.returncode == 3 and r.killed_for is None


# ---------------------------------------------------------------- fallback
def test_require_sandbox_refuses_fallback(monkeypatch):
    monkeypatch.setattr(sb.launch, "bwrap_available", lambda: False)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        py("pass", require_sandbox=True)


def test_fallback_maps_paths(no_bwrap, tmp_path):
    src = shared_dir(tmp_path / "harness")
    (src / "hello.py").write_text("print('hello from harness')\n")
    r = py("""
        import os, runpy, sys
        root = os.environ["SANDBOX_ROOT"]
        runpy.run_path(sys.argv[1])
        print(os.listdir(root + "/sandbox/harness"), os.getcwd() == root + "/scratch")
        print(os.environ["DATA"] == root + "/sandbox/harness/x")
        os.write(3, b"data")
    """, "/sandbox/harness/hello.py", mounts=[Mount(src, "/sandbox/harness")],
           env={"DATA": "/sandbox/harness/x"})
    assert r.returncode == 0, r.stderr
    assert not r.sandboxed
    assert r.stdout.splitlines() == ["hello from harness", "['hello.py'] True", "True"]
    assert r.data == b"data"


def test_fallback_wall_time_kill(no_bwrap):
    token = f"marker-{uuid.uuid4()}"
    join = run_in_thread(lambda: py(DAEMONIZE, token, "sleep", limits=Limits(wall_seconds=5)))
    assert wait_for(lambda: pids_with(token)), "daemon never started"
    r = join()
    assert r.killed_for == "time" and not r.sandboxed
    assert 5 <= r.seconds < 20
    assert pids_with(token) == []


def test_fallback_background_process_does_not_outlive_run(no_bwrap):
    token = f"marker-{uuid.uuid4()}"
    join = run_in_thread(lambda: py(DAEMONIZE, token, "exit"))
    assert wait_for(lambda: pids_with(token)), "daemon never started"
    r = join()
    assert r.returncode == 0 and r.killed_for is None, r.stderr
    assert pids_with(token) == []


def test_fallback_memory_kill(no_bwrap):
    r = py("""
        chunks = []
        while True:
            chunks.append(b"\\x01" * (10 << 20))
    """, limits=Limits(wall_seconds=60, memory_mb=300))
    assert r.killed_for == "memory" and not r.sandboxed
    assert r.seconds < 30


def test_process_limit_boundary(need_bwrap):
    code = """
        import sys, threading, time
        threads = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(int(sys.argv[1]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("ok")
    """
    limits = Limits(wall_seconds=60, processes=8)
    r = py(code, "7", limits=limits)  # 8 tasks with the main thread: allowed
    assert r.returncode == 0 and r.killed_for is None and r.stdout == "ok\n", r.stderr
    r = py(code, "8", limits=limits)  # 9 tasks: killed
    assert r.killed_for == "processes"


@pytest.mark.parametrize("sandboxed", [True, False])
def test_error_in_supervisor_kills_everything(sandboxed, monkeypatch, request):
    """An exception while supervising (think KeyboardInterrupt) must not hang or leak."""
    if sandboxed:
        request.getfixturevalue("need_bwrap")
    else:
        monkeypatch.setattr(sb.launch, "bwrap_available", lambda: False)
    token = f"marker-{uuid.uuid4()}"
    real_tree, calls = sb.watchdog.process_tree, []

    def failing_tree(pid):
        calls.append(pid)
        if len(calls) > 20:  # ~1 s into the run: the sleeper is up
            raise KeyboardInterrupt
        return real_tree(pid)

    monkeypatch.setattr(sb.watchdog, "process_tree", failing_tree)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        py("import sys, time; time.sleep(3600)", token)
    assert time.monotonic() - start < 30
    assert wait_for(lambda: not pids_with(token), timeout=10)


def test_missing_bwrap_is_detected(monkeypatch):
    monkeypatch.setattr(sb.launch.shutil, "which", lambda name: None)
    sb.launch.probe.cache_clear()
    try:
        assert not bwrap_available()
        assert "not on PATH" in sb.launch.probe()
    finally:
        monkeypatch.undo()
        sb.launch.probe.cache_clear()


def test_python_installed_under_tmp_is_usable(need_bwrap, tmp_path, monkeypatch):
    """CI may check the project out under /tmp, so the venv the sandbox binds can live in the host's /tmp."""
    venv = shared_dir(tmp_path / "checkout" / ".venv")
    tmp_path.chmod(0o700)  # like mktemp -d: the sandbox must not need to traverse the host's parents
    (venv / "marker.txt").write_text("venv under /tmp")
    (venv / "marker.txt").chmod(0o644)
    real = sb.command.python_dirs()
    monkeypatch.setattr(sb.command, "python_dirs", lambda: [*real, str(venv)])
    result = run_sandboxed([PY, "-c", f"print(open({str(venv / 'marker.txt')!r}).read()); "
                                      "open('/tmp/x', 'w').write('ok'); print(sorted(__import__('os').listdir('/tmp')))"],
                           mounts=[], limits=LIMITS, require_sandbox=True)
    assert result.returncode == 0, result.stderr
    assert "venv under /tmp" in result.stdout
    assert "'x'" in result.stdout and "checkout" not in result.stdout.split("[")[-1]
