"""Attacks on the sandbox's limits, through the real `autograder grade`, in both ways a run is made: forked from
the batch's fork server (the default as root) and in a sandbox of its own (--no-fork-server).

- a memfd hog (16 memfds of 250 MB each: memory no process maps);
- a user-namespace hog (a new user and mount namespace, a tmpfs of its own on /scratch, filled);
- the TA's session keyring: the grader runs in a session keyring holding a key (as a login with pam_keyinit
  has); the submission searches it, reads it and tries to leave a key behind;
- ptys: with --jobs 2 one run opens twenty ptys and holds them while another lists /dev/pts (a sandbox of its
  own has had a devpts of its own from bubblewrap all along; forked runs now get one too).

The host's Shmem is sampled every 50 ms while each batch runs and must never rise more than memory_mb +
256 MB; everyone else in the batch scores full marks.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading

import pytest

from autograder.results import ResultStore

import mutants

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

MEMORY_MB = 1500

MEMFD_HOG = r'''
import os, time
_fds = []
for _i in range(16):
    _fd = os.memfd_create(f"hog{_i}")
    for _ in range(250):
        os.write(_fd, bytes(1 << 20))
    _fds.append(_fd)
time.sleep(8)
'''

USERNS_HOG = r'''
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
_child = os.fork()
if _child == 0:
    try:
        _libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
        _uid, _gid = os.getuid(), os.getgid()
        if _libc.unshare(0x10000000 | 0x00020000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS
            os._exit(10)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {_uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {_gid} 1")
        if _libc.mount(b"none", b"/scratch", b"tmpfs", 0, None) != 0:
            os._exit(11)
        for _i in range(14):
            with open(f"/scratch/hog{_i}", "wb") as f:
                for _ in range(250):
                    f.write(bytes(1 << 20))
        os._exit(0)
    except BaseException:
        os._exit(12)
_status = os.waitstatus_to_exitcode(os.waitpid(_child, 0)[1])
if _status != 10:
    raise RuntimeError(f"the user-namespace hog got further than unshare (exit {_status})")
'''

KEYCTL = {"x86_64": (250, 248), "aarch64": (219, 217)}.get(platform.machine())  # keyctl, add_key

KEYRING_THIEF = r'''
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
_L, _S = ctypes.c_long, ctypes.c_char_p
_buf = ctypes.create_string_buffer(256)
_found = _libc.syscall(_L(%(keyctl)d), _L(10), _L(-3), _S(b"user"), _S(b"ta-secret"), _L(0))  # KEYCTL_SEARCH @s
_read = _libc.syscall(_L(%(keyctl)d), _L(11), _L(-3), _buf, _L(256))  # KEYCTL_READ @s
_added = _libc.syscall(_L(%(add_key)d), _S(b"user"), _S(b"planted"), _S(b"x"), _L(1), _L(-3))
if _found >= 0 or _read >= 0 or _added >= 0 or b"ta-secret" in open("/proc/keys", "rb").read():
    raise RuntimeError("the TA's session keyring is within reach")
'''

PTY_HOLDER = r'''
import os, time
_ptys = [os.openpty() for _ in range(20)]
time.sleep(10)
'''

PTY_LOOKER = r'''
import os, time
_mine = os.openpty()
_deadline = time.monotonic() + 10
while time.monotonic() < _deadline:
    _seen = sorted(os.listdir("/dev/pts"))
    if len(_seen) > 2:  # ptmx and our own
        raise RuntimeError(f"another run's ptys are visible: {_seen}")
    time.sleep(0.1)
'''

# Runs the CLI in a session keyring of its own that holds a secret; afterwards prints what the keyring holds.
UNDER_A_KEYRING = r'''
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
KEYCTL, ADD_KEY = %(keyctl)d, %(add_key)d
assert libc.syscall(L(KEYCTL), L(1), ctypes.c_void_p(None)) > 0  # KEYCTL_JOIN_SESSION_KEYRING
key = libc.syscall(L(ADD_KEY), ctypes.c_char_p(b"user"), ctypes.c_char_p(b"ta-secret"), ctypes.c_char_p(b"s3cret"),
                   L(6), L(-3))
assert key > 0
from autograder import cli
code = cli.main(sys.argv[1:])
buf = ctypes.create_string_buffer(4096)
n = libc.syscall(L(KEYCTL), L(11), L(-3), buf, L(4096))
print("KEYRING", json.dumps({"key": key, "holds": list(ctypes.cast(buf, ctypes.POINTER(ctypes.c_int32))[:n // 4])}))
sys.exit(code)
'''


def with_code(cell: str, code: str) -> dict:
    return mutants.filled({cell: code + "\n" + mutants.answers()[cell]})


def notebooks(fork: bool) -> dict[str, dict]:
    nbs = {"good_key": mutants.filled(), "memfd_hog": with_code("get_device", MEMFD_HOG),
           "userns_hog": with_code("get_device", USERNS_HOG)}
    if KEYCTL:
        nbs["keyring_thief"] = with_code("get_device", KEYRING_THIEF % {"keyctl": KEYCTL[0], "add_key": KEYCTL[1]})
    nbs["pty_a_holder"] = with_code("get_device", PTY_HOLDER)
    nbs["pty_b_looker"] = with_code("get_device", PTY_LOOKER)
    return nbs


def shmem_mb() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Shmem:")) / 1024


@pytest.fixture(scope="module", params=["fork-server", "own-sandbox"])
def batch(request, tmp_path_factory, mnist_dir):
    fork = request.param == "fork-server"
    work = tmp_path_factory.mktemp(request.param)
    course = mutants.course_copy(work, {"memory_mb = 3072": f"memory_mb = {MEMORY_MB}",
                                        "wall_seconds = 300": "wall_seconds = 120"})
    folder = work / "class"
    folder.mkdir()
    for name, nb in notebooks(fork).items():
        (folder / f"{name}.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    args = ["grade", str(folder), "--assignment", str(course), "--out", str(work / "out"), "--lang", "en",
            "--jobs", "2", "--device", "cpu"] + ([] if fork else ["--no-fork-server"])
    if KEYCTL:
        argv = [sys.executable, "-c", UNDER_A_KEYRING % {"keyctl": KEYCTL[0], "add_key": KEYCTL[1]}, *args]
    else:
        argv = [sys.executable, "-m", "autograder.cli", *args]
    before, peak, done = shmem_mb(), [0.0], threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], shmem_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = subprocess.run(argv, capture_output=True, text=True, cwd=work,
                             env={**os.environ, "MNIST_DIR": str(mnist_dir)})
    finally:
        done.set()
        sampler.join()
    keyring = [json.loads(line.removeprefix("KEYRING ")) for line in run.stdout.splitlines() if line.startswith("KEYRING ")]
    return {"fork": fork, "run": run, "rise": peak[0] - before, "keyring": keyring,
            "results": {r.student_id: r for r in ResultStore(work / "out").load_all()}}


def test_the_batch_completes_and_shmem_stays_within_the_memory_limit(batch):
    assert batch["run"].returncode == 0, batch["run"].stderr[-3000:]
    assert batch["rise"] <= MEMORY_MB + 256, batch["rise"]
    assert batch["results"]["good_key"].total == 100


def test_a_memfd_hog_is_stopped_for_memory(batch):
    result = batch["results"]["memfd_hog"]
    assert result.status == "limit" and "memory" in result.reason.en, (result.status, result.reason)


def test_a_user_namespace_hog_is_refused(batch):
    result = batch["results"]["userns_hog"]
    said = " ".join(c.message.en for c in result.checks if c.message)
    assert result.status == "graded", result.reason
    assert "got further than unshare" not in said
    assert result.parts == batch["results"]["good_key"].parts  # refused quietly: nothing else lost


@pytest.mark.skipif(not KEYCTL, reason=f"no keyctl numbers for {platform.machine()}")
def test_the_tas_session_keyring_is_out_of_reach(batch):
    result = batch["results"]["keyring_thief"]
    assert result.total == 100, [c.message.en for c in result.checks if c.message]
    [keyring] = batch["keyring"]
    assert keyring["holds"] == [keyring["key"]]  # nothing was left behind


def test_runs_at_the_same_time_do_not_see_each_others_ptys(batch):
    assert batch["results"]["pty_b_looker"].total == 100
    assert batch["results"]["pty_a_holder"].total == 100
