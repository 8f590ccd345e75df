"""Confinement beyond namespaces, in a sandbox of its own ("own"), in a run forked by the fork server ("fork")
and, where it applies, in the fallback without bubblewrap: memory that no process maps is counted and
limited (a memory cgroup per run, cgroup.py, or the watchdog's own count where there is none), a seccomp
filter (seccomp.py) refuses user namespaces, mounts, keyctl, ptrace..., each run has a session keyring of its
own, and each forked run a devpts instance of its own. Each test is an attack that worked before."""

from __future__ import annotations

import json
import os
import platform
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from autograder import cgroup, forkserver, observe, seccomp
from autograder import sandbox as sb
from autograder.sandbox import Limits
from autograder.sanitize import Cell

from test_sandbox import pids_with

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PY = sys.executable
MEMORY_MB = 1024
MACHINE = platform.machine()
NR = seccomp.SYSCALLS.get(MACHINE, {})


# ---------------------------------------------------------------- fixtures and helpers
class Runner:
    """Runs plain Python code in a sandbox of its own ("own") or as the cell of a run forked by the fork server
    ("fork", where `print` is made to flush: the harness leaves with os._exit)."""

    def __init__(self, name: str, grader=None, server=None):
        self.name, self.grader, self.server = name, grader, server

    def __call__(self, code: str, limits: Limits = Limits(wall_seconds=60, memory_mb=MEMORY_MB)):
        code = textwrap.dedent(code)
        if self.server is None:
            return sb.run_sandboxed([PY, "-c", code], mounts=[], limits=limits)
        g = self.grader
        source = "import functools\nprint = functools.partial(print, flush=True)\n" + code
        plan = observe.plan_for(g.assignment, [Cell("setup", source)], g.probes.SANDBOX, g.settings, g.data)
        result, obs = observe.run(plan, limits=limits, data=g.data, settings=g.settings, server=self.server)
        cell = obs.all("cell")
        assert result.killed_for or (cell and cell[0]["ok"]), (cell, result.stderr[-2000:])
        return result


def _runner(name: str, request) -> Runner:
    if not sb.bwrap_available():
        pytest.fail(f"bubblewrap unusable here: {sb.launch.probe()}")
    if name == "own":
        return Runner(name)
    return Runner(name, request.getfixturevalue("grader"), request.getfixturevalue("server"))


@pytest.fixture(params=["own", "fork"])
def run(request) -> Runner:
    """How the attack runs: a sandbox of its own, or forked by the fork server (both need bubblewrap)."""
    return _runner(request.param, request)


def found(result) -> dict:
    [line] = [x for x in result.stdout.splitlines() if x.startswith("FOUND ")]
    return json.loads(line.removeprefix("FOUND "))


def _shmem() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) << 10
    raise AssertionError("no Shmem in /proc/meminfo")


@contextmanager
def host_shmem():
    """The rise of the machine's shared memory (tmpfs, memfds) during the block, sampled every 50 ms."""
    before, box, stop = _shmem(), {"rise": 0}, threading.Event()

    def sample():
        while not stop.is_set():
            box["rise"] = max(box["rise"], _shmem() - before)
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()
        thread.join()
        box["rise"] = max(box["rise"], _shmem() - before)


@pytest.fixture(params=["cgroup", "watchdog"])
def accounting(request, monkeypatch):
    """Each way memory is counted, alone: the run's memory cgroup (the watchdog's own count of memfds and
    tmpfs mounts switched off), or the watchdog without a cgroup."""
    if request.param == "cgroup":
        if sb.memory_accounting() == "watchdog":
            pytest.skip("no memory cgroup can be made here (not root, or cgroup v2 without delegation)")
        monkeypatch.setattr(sb.watchdog, "_unmapped_bytes", lambda pids, host: 0)
    else:
        monkeypatch.setattr(cgroup, "create", lambda memory_mb: None)
    return request.param


def our_cgroups() -> list[str]:
    found_ = cgroup._parent()
    if not found_:
        return []
    return [n for n in os.listdir(found_[1]) if n.startswith(f"autograder-{os.getpid()}-")]


# ---------------------------------------------------------------- 1. memory no process maps
MEMFD_HOG = """
    import os, time
    fds = []
    for i in range(16):
        fd = os.memfd_create("hog")
        for _ in range(5):
            os.write(fd, bytes(50 << 20))  # 250 MB each: under RLIMIT_FSIZE
        fds.append(fd)
        print("memfd", i)
    time.sleep(8)
    print("KEPT")
"""


def test_a_memfd_hog_is_stopped(run, accounting):
    with host_shmem() as shmem:
        r = run(MEMFD_HOG)
    assert r.killed_for == "memory" and r.returncode is None, (r.killed_for, r.stdout, r.stderr[-2000:])
    assert "KEPT" not in r.stdout and r.seconds < 30
    assert shmem["rise"] < (MEMORY_MB + 256) << 20, shmem["rise"] >> 20
    assert our_cgroups() == []  # removed after the run


# A child (a fresh interpreter: a fork of the fork server's run would count the zygote's pages twice) that
# becomes root in a user namespace of its own, mounts a tmpfs over /scratch and fills it.
USERNS_CHILD = r"""
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the uid switch made /proc/self/*_map root's
if libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
    print("FOUND", '{"unshare": %d}' % ctypes.get_errno(), flush=True)
    raise SystemExit(0)
with open("/proc/self/setgroups", "w") as f:
    f.write("deny")
with open("/proc/self/uid_map", "w") as f:
    f.write("0 %d 1" % uid)
with open("/proc/self/gid_map", "w") as f:
    f.write("0 %d 1" % gid)
assert libc.mount(b"none", b"/scratch", b"tmpfs", 0, b"size=8g") == 0, os.strerror(ctypes.get_errno())
for i in range(14):
    with open("/scratch/f%d" % i, "wb") as f:
        for _ in range(5):
            f.write(bytes(50 << 20))
    print("file", i, flush=True)
time.sleep(8)
print("KEPT", flush=True)
"""
USERNS_HOG = f"""
    import subprocess, sys
    subprocess.run([sys.executable, "-c", {USERNS_CHILD!r}])
"""


def test_a_user_namespace_tmpfs_hog_is_refused(run):
    with host_shmem() as shmem:
        r = run(USERNS_HOG)
    assert r.killed_for is None and r.returncode == 0, (r.killed_for, r.stdout, r.stderr[-2000:])
    assert found(r) == {"unshare": 1}  # EPERM: the seccomp filter
    assert shmem["rise"] < (MEMORY_MB + 256) << 20


def test_a_tmpfs_hog_in_a_user_namespace_is_counted_without_seccomp(run, accounting, monkeypatch):
    """Were the filter not there, the memory accounting would still stop it."""
    monkeypatch.setattr(sb.command, "seccomp_program", lambda: None)
    with host_shmem() as shmem:
        r = run(USERNS_HOG)
    assert r.killed_for == "memory", (r.killed_for, r.stdout, r.stderr[-2000:])
    assert "KEPT" not in r.stdout and "file 0" in r.stdout
    assert shmem["rise"] < (MEMORY_MB + 256) << 20


def test_files_on_the_runs_own_tmpfs_mounts_count(run, accounting):
    """/dev/shm (capped at memory_mb), /scratch and /tmp (at scratch_mb; files at most that) are memory: filled
    together they exceed it. (700 MB: a forked run starts with the fork server's 550 MB, which its cgroup is
    not charged for.)"""
    r = run("""
        import time
        for path, mb in (("/dev/shm/a", 200), ("/dev/shm/b", 200), ("/scratch/c", 250), ("/tmp/d", 250)):
            with open(path, "wb") as f:
                for _ in range(mb // 25):
                    f.write(bytes(25 << 20))
        time.sleep(5)
        print("KEPT")
    """, Limits(wall_seconds=60, memory_mb=700, scratch_mb=256))
    assert r.killed_for == "memory" and "KEPT" not in r.stdout, (r.killed_for, r.stdout, r.stderr[-2000:])


def test_an_out_of_memory_kill_in_the_cgroup_is_a_memory_kill_of_the_whole_run(run, monkeypatch):
    """The kernel refuses beyond the cgroup's limit between two rounds of the watchdog: the run is killed
    for memory, all of it (here the watchdog's own limit is far away, so only the kernel can act)."""
    if sb.memory_accounting() == "watchdog":
        pytest.skip("no memory cgroup can be made here")
    real = cgroup.create
    monkeypatch.setattr(cgroup, "create", lambda memory_mb: real(256))
    token = f"marker-{uuid.uuid4()}"
    r = run(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "x = b'1' * (600 << 20); import time; time.sleep(60)"])
        time.sleep(60)  # {token}
    """, Limits(wall_seconds=120, memory_mb=4096))
    assert r.killed_for == "memory" and r.returncode is None and r.seconds < 30, (r.killed_for, r.seconds)
    time.sleep(0.2)
    assert our_cgroups() == []


def test_the_fallback_without_bubblewrap_counts_memfds_too(monkeypatch):
    monkeypatch.setattr(sb.launch, "bwrap_available", lambda: False)
    monkeypatch.setattr(cgroup, "create", lambda memory_mb: None)
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"), host_shmem() as shmem:
        r = sb.run_sandboxed([PY, "-c", textwrap.dedent(MEMFD_HOG)], mounts=[],
                             limits=Limits(wall_seconds=60, memory_mb=MEMORY_MB))
    assert r.killed_for == "memory" and not r.sandboxed and "KEPT" not in r.stdout
    assert shmem["rise"] < (MEMORY_MB + 256) << 20


def test_memory_accounting_says_which_applies():
    parent = cgroup._parent()
    assert sb.memory_accounting() == (f"cgroup {parent[0]}" if parent else "watchdog")


def test_a_cgroup_v2_is_used_only_where_the_memory_controller_is_delegated(tmp_path):
    own = tmp_path / "user.slice" / "grader"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpu io memory pids\n")
    mountinfo = f"30 1 0:26 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw\n"
    (own / "cgroup.subtree_control").write_text("cpu\n")  # memory not handed down: enabling it is not ours
    assert cgroup._own_dir("0::/user.slice/grader\n", mountinfo) is None
    (own / "cgroup.subtree_control").write_text("cpu memory\n")
    assert cgroup._own_dir("0::/user.slice/grader\n", mountinfo) == ("v2", str(own))
    v1 = f"31 1 0:27 / {tmp_path} rw - cgroup cgroup rw,memory\n"
    assert cgroup._own_dir("4:memory:/user.slice/grader\n0::/\n", v1) == ("v1", str(own))
    (own / "memory.stat").write_text("anon 1000\nfile 5000\nshmem 20\n")
    (own / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    cg = cgroup.RunCgroup("v2", str(own))
    assert (cg.usage_bytes(), cg.oom_kills()) == (1020, 1)


# ---------------------------------------------------------------- 2. seccomp
SYSCALL_PROBE = """
    import ctypes, errno, json, os, subprocess, sys, threading
    NR = json.loads(%r)
    libc = ctypes.CDLL(None, use_errno=True)

    def call(nr, *args):
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]

    out = {
        "unshare": call(NR["unshare"], 0x10000000),  # CLONE_NEWUSER: allowed to an unprivileged uid
        "mount": call(NR["mount"], 0, 0, 0, 0, 0),
        "keyctl": call(NR["keyctl"], 0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring
        "ptrace": call(NR["ptrace"], 0, 0, 0, 0),  # PTRACE_TRACEME
        "bpf": call(NR["bpf"], 0, 0, 0),
        "clone3": call(NR["clone3"], 0, 0),
        "personality query": call(NR["personality"], 0xFFFFFFFF),
        "personality change": call(NR["personality"], 0x0400000),  # READ_IMPLIES_EXEC
    }
    ctypes.set_errno(0)
    child = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_long(0x10000000 | 17), *[ctypes.c_long(0)] * 4)
    if child == 0:
        os._exit(0)  # the filter is gone: a child in a user namespace of its own
    out["clone newuser"] = "ok" if child > 0 else errno.errorcode[ctypes.get_errno()]
    if child > 0:
        os.waitpid(child, 0)
    if os.uname().machine == "x86_64":
        out["x32 getpid"] = call(0x40000000 + 39)
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    out["seccomp"] = status["Seccomp"].strip()
    # What a submission does: threads, a subprocess (fork + exec), arithmetic.
    box = []
    t = threading.Thread(target=lambda: box.append(sum(i * i for i in range(10 ** 5))))
    t.start()
    t.join()
    out["work"] = [box[0], subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True,
                                          text=True).stdout.strip()]
    print("FOUND", json.dumps(out))
"""
REFUSED = {"unshare": "EPERM", "mount": "EPERM", "keyctl": "EPERM", "ptrace": "EPERM", "bpf": "EPERM",
           "clone newuser": "EPERM", "clone3": "ENOSYS", "personality query": "ok", "personality change": "EPERM",
           "seccomp": "2", "work": [sum(i * i for i in range(10 ** 5)), "42"]}
if MACHINE == "x86_64":
    REFUSED["x32 getpid"] = "EPERM"


@pytest.mark.skipif(not NR, reason=f"no seccomp filter for {MACHINE}")
@pytest.mark.parametrize("where", ["own", "fork", "fallback"])
def test_the_seccomp_filter_refuses_what_docker_refuses(where, request, monkeypatch):
    if where == "fallback":
        monkeypatch.setattr(sb.launch, "bwrap_available", lambda: False)
        with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
            r = sb.run_sandboxed([PY, "-c", textwrap.dedent(SYSCALL_PROBE % json.dumps(NR))], mounts=[],
                                 limits=Limits(wall_seconds=60))
    else:
        r = _runner(where, request)(SYSCALL_PROBE % json.dumps(NR), Limits(wall_seconds=60))
    assert r.returncode == 0 and r.killed_for is None, r.stderr[-2000:]
    assert found(r) == REFUSED


def _simulate(prog: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    """A classic-BPF interpreter for the few instructions seccomp.program uses."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc, pc = struct.unpack_from("=I", data, k)[0], pc + 1
        elif code in (0x15, 0x35, 0x45):
            hit = acc == k if code == 0x15 else acc >= k if code == 0x35 else bool(acc & k)
            pc += 1 + (jt if hit else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_the_filter_covers_both_architectures_and_kills_any_other():
    prog = seccomp.program()
    eperm, allow = seccomp.SECCOMP_RET_ERRNO | 1, seccomp.SECCOMP_RET_ALLOW
    for arch, table in seccomp.SYSCALLS.items():
        audit = seccomp.AUDIT_ARCH[arch]
        for name in seccomp.BLOCKED:
            if name in table:
                assert _simulate(prog, table[name], audit) == eperm, (arch, name)
        assert _simulate(prog, table["clone"], audit, 0x10000000 | 17) == eperm
        assert _simulate(prog, table["clone"], audit, 0x003D0F00) == allow  # pthread_create's flags
        assert _simulate(prog, table["clone3"], audit) == seccomp.SECCOMP_RET_ERRNO | 38
        assert _simulate(prog, table["personality"], audit, 0) == allow
        assert _simulate(prog, 63, audit) == allow  # read (aarch64) / uname (x86_64)
    # The same numbers mean other calls elsewhere: aarch64's keyctl (219) is x86_64's restart_syscall.
    assert _simulate(prog, 219, seccomp.AUDIT_ARCH["x86_64"]) == allow
    assert _simulate(prog, 39 | 0x40000000, seccomp.AUDIT_ARCH["x86_64"]) == eperm  # x32
    assert _simulate(prog, 20, 0x40000003) == seccomp.SECCOMP_RET_KILL_PROCESS  # i386 (int 0x80)


def test_bwrap_refuses_nested_user_namespaces_when_it_makes_one(monkeypatch):
    monkeypatch.setattr(sb.command, "is_root", lambda: False)
    cmd = sb.command.bwrap_argv(["true"], [], Limits(), None, "/scratch", (), 3, False)
    assert "--unshare-user" in cmd
    assert ("--disable-userns" in cmd) == sb.command.bwrap_has("--disable-userns")


# ---------------------------------------------------------------- 3. the session keyring
KEYRING_OUTER = r"""
import ctypes, json, os, sys
sys.path.insert(0, ROOT)
from autograder import sandbox as sb
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long

def session_keys():
    buf = ctypes.create_string_buffer(4096)
    n = libc.syscall(L(NR["keyctl"]), L(11), L(-3), buf, L(4096))  # KEYCTL_READ of @s
    assert n >= 0, os.strerror(ctypes.get_errno())
    return list(ctypes.cast(buf, ctypes.POINTER(ctypes.c_int32))[:n // 4])

# A session keyring of this process's own (as a TA's login has), holding a secret.
assert libc.syscall(L(NR["keyctl"]), L(1), ctypes.c_void_p(None)) > 0  # KEYCTL_JOIN_SESSION_KEYRING, anonymous
key = libc.syscall(L(NR["add_key"]), ctypes.c_char_p(b"user"), ctypes.c_char_p(b"ta-secret"),
                   ctypes.c_char_p(b"s3cret"), L(6), L(-3))
assert key > 0, os.strerror(ctypes.get_errno())
seen = {}
if FORK:
    from autograder import observe
    from autograder.course import Course
    from autograder.sanitize import Cell
    a = Course.at(ROOT).lab("cnn_mnist")
    settings, data = observe.RunSettings(), observe.DataDir()
    server = observe.start_fork_server(a, settings, data)
    plan = observe.plan_for(a, [Cell("setup", "import functools\nprint = functools.partial(print, flush=True)\n"
                                              + INSIDE % key)], {}, settings, data)
try:
    for filtered in (True, False):
        if not filtered:
            sb.command.seccomp_program = lambda: None  # the keyring alone
        seen[f"own {filtered}"] = sb.run_sandboxed([sys.executable, "-c", INSIDE % key], mounts=[],
                                                   limits=sb.Limits(wall_seconds=60)).stdout
        if FORK:
            seen[f"fork {filtered}"] = observe.run(plan, limits=a.limits, data=data, settings=settings,
                                                   server=server)[0].stdout
finally:
    if FORK:
        server.close()
        data.close()
print("OUTER", json.dumps({"key": key, "seen": seen, "after": session_keys()}))
"""
KEYRING_INSIDE = r"""
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
L, S = ctypes.c_long, ctypes.c_char_p

def result(r):
    return r if r >= 0 else errno.errorcode[ctypes.get_errno()]

buf = ctypes.create_string_buffer(256)
out = {
    "search": result(libc.syscall(L(NR_KEYCTL), L(10), L(-3), S(b"user"), S(b"ta-secret"), L(0))),
    "read key": result(libc.syscall(L(NR_KEYCTL), L(11), L(%d), buf, L(256))),
    "add_key": result(libc.syscall(L(NR_ADD_KEY), S(b"user"), S(b"planted"), S(b"x"), L(1), L(-3))),
    "proc keys": open("/proc/keys").read() if os.path.exists("/proc/keys") else "",
}
print("FOUND", json.dumps(out))
"""


@pytest.mark.skipif(not NR, reason=f"no keyctl numbers for {MACHINE}")
def test_the_graders_session_keyring_is_out_of_reach(mnist_dir):
    """Run from a process whose session keyring holds a secret (in a subprocess: ours stays as it is): inside,
    it can neither be found nor read, nothing can be added to it; after the runs it holds only its own key.
    Then again without the filter: a session keyring of the run's own is what keeps it out of reach."""
    if not sb.bwrap_available():
        pytest.fail(f"bubblewrap unusable here: {sb.launch.probe()}")
    inside = (f"NR_KEYCTL, NR_ADD_KEY = {NR['keyctl']}, {NR['add_key']}\n" + KEYRING_INSIDE)
    fork = forkserver.usable("cpu")
    prelude = (f"ROOT = {str(Path(__file__).resolve().parents[1])!r}\nNR = {json.dumps(NR)}\n"
               f"FORK = {fork}\nINSIDE = {inside!r}\n")
    out = subprocess.run([PY, "-c", prelude + KEYRING_OUTER], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MNIST_DIR": str(mnist_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    [line] = [x for x in out.stdout.splitlines() if x.startswith("OUTER ")]
    outer = json.loads(line.removeprefix("OUTER "))
    assert len(outer["seen"]) == (4 if fork else 2)
    for where, stdout in outer["seen"].items():
        filtered = where.endswith("True")
        [line] = [x for x in stdout.splitlines() if x.startswith("FOUND ")]
        inside_saw = json.loads(line.removeprefix("FOUND "))
        assert "ta-secret" not in inside_saw.pop("proc keys"), where
        assert isinstance(inside_saw["search"], str) and isinstance(inside_saw["read key"], str), (where, inside_saw)
        if filtered:
            assert inside_saw == {"search": "EPERM", "read key": "EPERM", "add_key": "EPERM"}, where
        else:
            assert inside_saw["search"] == "ENOKEY" and inside_saw["read key"] in ("EACCES", "ENOKEY"), where
    assert outer["after"] == [outer["key"]]


# ---------------------------------------------------------------- 4. ptys
PTY_HOLDER = """
    import os, signal
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    ptys = [os.openpty() for _ in range(20)]
    print("HOLDER", sorted(os.listdir("/dev/pts")))
    signal.sigtimedwait([signal.SIGUSR1], 60)  # until the test has looked: %s
"""
PTY_LOOKER = """
    import os
    mine = os.openpty()
    print("FOUND", __import__("json").dumps(sorted(os.listdir("/dev/pts"))))
"""


def _pty_holder(candidates) -> int | None:
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            ptys = sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/dev/pts/") for fd in fds)
        except OSError:
            continue
        if ptys >= 20:
            return pid
    return None


def test_runs_at_the_same_time_do_not_see_each_others_ptys(run):
    """As with --jobs 2: one run opens twenty ptys and holds them, the other lists /dev/pts meanwhile."""
    token = f"marker-{uuid.uuid4()}"
    box = {}
    holder = threading.Thread(target=lambda: box.setdefault("r", run(PTY_HOLDER % token)), daemon=True)
    holder.start()
    if run.server is not None:  # a forked run's command line is the fork server's
        candidates = lambda: sb.watchdog.process_tree(run.server._proc.pid)[0]  # noqa: E731
    else:
        candidates = lambda: pids_with(token)  # noqa: E731
    deadline, pid = time.monotonic() + 60, None
    while pid is None and time.monotonic() < deadline and holder.is_alive():
        pid = _pty_holder(candidates())
        time.sleep(0.05)
    assert pid, "the run never opened its ptys"
    try:
        looker = run(PTY_LOOKER)
    finally:
        os.kill(pid, signal.SIGUSR1)
        holder.join(60)
    assert looker.returncode == 0, looker.stderr[-2000:]
    assert found(looker) == ["0", "ptmx"]  # its own pty, none of the other run's twenty
    held = box["r"]
    assert held.returncode == 0 and "HOLDER" in held.stdout, held.stderr[-2000:]
