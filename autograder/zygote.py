"""The fork server that runs inside the sandbox: it warms up once for a whole batch and forks each submission.

Run as ``python -I zygote.py PLAN.json SOCKET_FD`` in a bubblewrap sandbox (forkserver.py starts it, as root
with CAP_SYS_ADMIN, CAP_SETUID and CAP_SETGID; bwrap has set no_new_privs). It imports torch and does
harness.prepare() once (interpreter, torch, torch._dynamo, the data: 2.5-3 s of CPU that every submission
would otherwise pay), then serves runs. Each request on the socket brings a plan file and four descriptors
(stdout, stderr, the record channel, a status pipe). For each, the zygote forks a child that

0. reads the plan, the student's cells among them (the zygote never does: every later run inherits the
   zygote's memory, and freed memory is not erased), and moves itself into the run's memory cgroup when the
   request brings a sixth descriptor, that cgroup's cgroup.procs (the grader made it and opened it: in this
   sandbox's cgroup namespace the cgroup file system is not even mounted), so that the kernel charges all
   the run allocates there and kills there beyond its limit;
1. enters a new pid namespace and forks the submission's process, pid 1 there: killing it kills everything
   the submission started, and nothing else is visible in its /proc;
2. reports that process's pid on the status pipe, waits for it and reports its exit status (then exits);

while the submission's process, before any student code:

3. takes a session, mount, network and IPC namespace of its own: fresh tmpfs at /scratch, /tmp and
   /dev/shm (no file survives from one student to the next), its own /proc, its own devpts instance (the
   zygote's is shared by every run: a pty one run opens would show in the next one's /dev/pts), no network;
4. sets the rlimits, switches to its own unused uid, which drops every capability (RLIMIT_NPROC counts that
   uid's tasks only), joins a session keyring of its own (not the grader's), installs the seccomp filter the
   request brings (seccomp.py: no user namespaces, keyctl, ptrace, mounts...), says "ok" on the status pipe
   and keeps only its four descriptors (never the request socket: that would let student code ask the
   zygote, which is root, for anything; nor the status pipe);
5. runs harness.run_submission() on the plan: the same code and data as a sandbox of its own would run.

Only the standard library, the harness and seccomp.py (copied beside this file) are used here; nothing here
judges anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402 - beside this file in the sandbox
import seccomp  # noqa: E402 - likewise

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC = 0x00020000, 0x20000000, 0x40000000, 0x08000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    2, 4, 8, 1, 32, 4096, 16384, 1 << 18)
libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags: int, data) -> None:
    enc = (lambda v: None if v is None else v.encode())
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def serve(sock: socket.socket, config: dict, torch, data) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the per-run children
    while True:
        select.select([sock], [], [])
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 6)
        except OSError:
            return
        if not msg:
            return  # the grader closed its end: the batch is over
        request = json.loads(msg)
        if len(fds) != 5 + bool(request.get("cgroup")):
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            try:
                sock.close()
                if request.get("cgroup"):
                    # Before anything of the run's is allocated; the zygote's pages it shares stay charged
                    # where they are. Writing "0" moves the writer (the file's opener was the grader: root).
                    try:
                        os.write(fds[5], b"0")
                    except OSError as exc:  # said in the zygote's log, which ForkServerGone quotes
                        sys.stderr.write(f"zygote: cannot enter the run's memory cgroup: {exc}\n")
                        raise
                    os.close(fds[5])
                # Read here, not in the zygote: a student's code must never reach the zygote's memory, which
                # every later run inherits (freed is not erased).
                with os.fdopen(fds[0], "rb") as f:
                    plan = json.loads(f.read())
                _waiter(fds[1:5], request, config, plan, torch, data)
            finally:
                os._exit(125)
        for fd in fds:
            os.close(fd)


def _waiter(fds: list[int], request: dict, config: dict, plan: dict, torch, data) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # this one waits for its child
    status = fds[3]
    _check(libc.unshare(CLONE_NEWPID), "unshare pid namespace")
    pid = os.fork()
    if pid == 0:
        try:
            _submission(fds, request, config, plan, torch, data)
        except BaseException as exc:  # noqa: BLE001 - whatever failed before "ok" is ours, and must say so
            with contextlib.suppress(OSError):
                os.write(fds[1], f"sandbox: the fork server could not start the run: {exc!r}\n".encode())
        os._exit(125)
    for fd in fds[:3]:
        os.close(fd)
    os.write(status, f"pid {pid}\n".encode())
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    os.write(status, f"exit {code if code >= 0 else 128 - code}\n".encode())
    os._exit(0)


def _submission(fds: list[int], request: dict, config: dict, plan: dict, torch, data) -> None:
    os.setsid()  # a session, so a scheduling group (autogroup) of its own, as a sandbox of its own has
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing mounted here reaches the zygote
    scratch, memory = request["scratch_mb"], request["memory_mb"]
    for target, size in (("/scratch", scratch), ("/tmp", scratch), ("/dev/shm", memory)):
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,mode=1777")
    # The interpreter's own folders that lay under /tmp (a checkout there) were just hidden: bind them back,
    # read-only, from where the zygote's sandbox also put them.
    for held, path in config["held"]:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(held, path, None, MS_BIND | MS_REC, None)
        _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV, None)
    # A devpts instance of its own (bwrap gave the zygote's sandbox one, which every run would share).
    _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,max=64")
    if not os.path.islink("/dev/ptmx"):  # bwrap's --dev makes it a symlink to pts/ptmx; a node would not follow
        _mount("/dev/pts/ptmx", "/dev/ptmx", None, MS_BIND, None)
    # Out of the way first (a received descriptor may itself be 0-3), then into place.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (os.open("/dev/null", os.O_RDONLY), *fds[:3])]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    for name, value in request["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too big a write is EFBIG, as in a sandbox of its own
    uid = request["uid"]
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from here on: no capability left
    seccomp.join_session_keyring()
    # Last, with nothing privileged left to do; still before "ok", so that a filter that will not install
    # is the fork server's failure (the run goes to a sandbox of its own), not the student's.
    if request.get("seccomp"):
        seccomp.install(bytes.fromhex(request["seccomp"]))
    os.chdir("/scratch")
    # Set up: from here on, whatever goes wrong is the submission's. (Before this line the grader treats a
    # failed run as the fork server's and runs the submission again in a sandbox of its own.)
    os.write(fds[3], b"ok\n")
    os.closerange(harness.CHANNEL + 1, 1 << 16)  # the status pipe among them
    torch.set_num_threads(plan["threads"])
    sys.modules["__main__"] = harness  # as in a sandbox of its own, where the harness is the main module
    emit = harness.open_channel()
    emit("start", pid=os.getpid())
    emit("ready")
    emit.restart_clock()
    harness.run_submission(torch, plan, emit, data)


def main(plan_path: str, sock_fd: int) -> None:
    with open(plan_path, encoding="utf-8") as f:
        warm_plan = json.load(f)
    sock = socket.socket(fileno=sock_fd)
    torch, data = harness.prepare(warm_plan)
    sock.sendall(b"ready")
    serve(sock, warm_plan["zygote"], torch, data)
    # The batch is over and nothing is left to report: skip the interpreter's teardown, which with torch loaded
    # takes about 2 s, time the grader's close (and a cluster worker's, which Dask's nanny cuts at 4 s) waits.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
