"""The shim: the first program run in the sandbox (or, in the fallback, on the host).

It puts the data pipe on fd 3, sets the rlimits, drops root, joins a session keyring of its own, installs
the seccomp filter and execs the command. In the fallback it stays as parent and child subreaper so that
nothing can escape the process tree. Run with ``python -I -S``: it must start fast and must not import
anything from the sandboxed environment, so it is kept here as source.
"""

SHIM = r"""
import json, os, resource, signal, sys, time
cfg = json.loads(sys.argv[1])
argv = sys.argv[2:]
if cfg["data_fd"] != 3:
    os.dup2(cfg["data_fd"], 3)  # the copy is inheritable: it survives the exec
    os.close(cfg["data_fd"])
for name, value in cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # kept across exec: too big a write is EFBIG
os.nice(cfg["nice"])
if cfg["uid"] is not None:  # root: leaving uid 0 also drops every capability
    os.setgroups(cfg["groups"])  # none, or a GPU's device nodes' groups (gpu.py)
    os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
    os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])

def confine():
    # A session keyring of its own (not the grader's: see seccomp.join_session_keyring), then the seccomp
    # filter, last before the exec (a copy of seccomp.install: this shim can import nothing of ours; it is
    # single-threaded, as prctl needs).
    if cfg["keyctl"] is None and not cfg["seccomp"]:
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    long, ulong = ctypes.c_long, ctypes.c_ulong
    if cfg["keyctl"] is not None and libc.syscall(long(cfg["keyctl"]), long(1), ctypes.c_void_p(None)) < 0:
        if ctypes.get_errno() not in (1, 38):  # EPERM, ENOSYS: no keyrings to inherit here
            sys.stderr.write("sandbox: cannot join a new session keyring: %s\n" % os.strerror(ctypes.get_errno()))
            os._exit(126)
    if cfg["seccomp"]:
        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        prog = bytes.fromhex(cfg["seccomp"])
        buf = ctypes.create_string_buffer(prog, len(prog))
        fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
        if (libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0)) != 0
                or libc.prctl(22, ulong(2), ctypes.byref(fprog), ulong(0), ulong(0)) != 0):
            sys.stderr.write("sandbox: cannot install the seccomp filter: %s\n" % os.strerror(ctypes.get_errno()))
            os._exit(126)

def run():
    confine()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write("sandbox: cannot execute %r: %s\n" % (argv[0], exc))
        os._exit(127)

if not cfg["subreaper"]:
    run()

import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
shim = os.getpid()
child = os.fork()
if child == 0:
    os.setpgid(0, 0)  # its own process group: one killpg() stops a fork bomb at once
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die if the shim is killed
    if os.getppid() != shim:
        os._exit(137)
    run()

def descendants():
    kids = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [os.getpid()]
    while todo:
        found = kids.get(todo.pop(), [])
        out += found
        todo += found
    return out

code = None
while code is None:
    pid, status = os.waitpid(-1, 0)
    if pid == child:
        code = os.waitstatus_to_exitcode(status)
# The command is done: whatever it left behind is now our child; kill and reap it
# (without blocking: a process forked while we killed its parent needs another round).
while True:
    for pid in descendants():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        break
    time.sleep(0.01)
os._exit(code if code >= 0 else 128 - code)
"""
