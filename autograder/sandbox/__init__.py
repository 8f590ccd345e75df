"""Run untrusted student code in a throw-away sandbox, under resource limits.

The grader calls :func:`run_sandboxed` once per submission.  The command runs in
a fresh process tree with

* **bubblewrap** (``bwrap``): new mount, pid, network, ipc, uts and cgroup
  namespaces; the root file system is an empty read-only tmpfs into which only
  an allow-list is bound read-only (``/usr``, ``/bin``, ``/lib*``, a few
  ``/etc`` files the dynamic linker needs, the Python install prefix and the
  virtualenv) plus the caller's :class:`Mount` s.  ``/scratch`` is a private
  tmpfs of ``Limits.scratch_mb`` (also the home and working directory);
  ``/tmp`` is another of the same size (a venv under the host's /tmp is bound
  inside it).  ``/dev/shm`` is a
  separate tmpfs (DataLoader workers need it) capped at ``Limits.memory_mb``.
  The environment is cleared; no network exists but an unconnected loopback.
* **an unprivileged uid**: RLIMIT_NPROC is what stops a fork bomb inside the
  kernel, and it counts the tasks of a *user*; root is exempt.  So

  - when the grader runs as root, bwrap runs privileged (no user namespace)
    and our start-up shim switches to a random otherwise unused uid/gid
    (``command.pick_uid``) before exec'ing the command.  The count is then per
    sandbox.  Consequence: everything the caller mounts must be readable by
    "others" (and writable mounts writable by others); this is checked up
    front and a ``ValueError`` says what to chmod.
  - when the grader is an ordinary user, bwrap makes a user namespace.  On
    kernels >= 5.14 RLIMIT_NPROC set *inside* that namespace counts only the
    namespace's tasks, so we set it there; on older kernels it would count all
    of the user's processes, so we leave it to the watchdog.
* **a memory cgroup of its own** (cgroup.py), where the grader may make one
  (``memory_accounting()`` says which kind applies): bwrap starts inside it, so
  the kernel charges every page of the run there, mapped or not (memfds, files
  on a tmpfs it mounted), and kills inside it beyond ``Limits.memory_mb`` + a
  small allowance for kernel memory and page cache.  Removed after the run.
* **a seccomp filter** (seccomp.py, modelled on Docker's default profile) and
  **a session keyring of its own**, installed by the shim after the uid switch,
  right before the exec: no user namespaces, mounts, keyctl, ptrace, BPF,
  io_uring...; the grader's session keyring (the TA's login) is out of reach.
* **a watchdog** in the calling thread polls the process tree every
  ``watchdog._POLL_SECONDS``: wall time, memory (resident anonymous + shared-memory
  pages summed over the tree, or what the run's cgroup was charged for them if
  more; without a cgroup, plus memfds and the run's own tmpfs mounts; mapped
  library files are not counted, they are page cache the kernel can drop), and
  the number of tasks (processes + threads).  Going beyond ``Limits.processes`` tasks is
  treated as a fork bomb.  The kill is SIGKILL to the sandbox's pid 1, which
  makes the kernel kill every process in the pid namespace, double-forked and
  setsid'd ones included; we wait until it is gone before returning.
* **rlimits** set by the shim: RLIMIT_CORE=0, RLIMIT_FSIZE=scratch size (with
  SIGXFSZ ignored, so an oversized write fails with EFBIG instead of killing),
  RLIMIT_NPROC as above, and nice +10 so the watchdog and the machine stay
  responsive while a submission burns CPU.  RLIMIT_AS is deliberately not set (torch needs >= 4 GiB of address
  space to import, CUDA needs it unlimited).

Turns: with ``turn``, the command starts at once at nice +19 with a pipe on its
stdin, and the watchdog polls ``turn()`` until it returns True; then it writes
one byte to that pipe and closes it, and the wall-time limit starts counting.
The command may read stdin to wait for its turn.  At the turn the watchdog
moves every task of the sandbox, and the session's scheduling group
(autogroup), back to +10; lowering a nice value takes CAP_SYS_NICE, so a grader
that is not root leaves the tasks at +19.  Before its turn the sandbox uses
only CPU nobody else wants, and the time spent waiting is not the submission's:
the grader uses this to start the next sandbox (interpreter, torch, data)
while the current one trains.

Outcome (:class:`RunResult`): ``killed_for`` is ``None`` or one of ``"time"``,
``"memory"``, ``"processes"`` -- only things the watchdog killed for, or the
kernel inside the run's memory cgroup ("memory", then the whole run is killed) -- or
``"cancelled"`` (a waiting run whose ``turn`` raised :class:`TurnCancelled`).  Output
beyond the cap is drained and discarded (``output_truncated``), a full
scratch disk is an ENOSPC/EFBIG error inside the program; neither is a kill.
``returncode`` is the command's exit status, 128+N when it died of signal N
(what a shell reports; bwrap can not tell us more), and ``None`` when the
watchdog killed it.

Result channel: the command finds the write end of a pipe as file descriptor 3
and may write anything there (e.g. JSON or safetensors bytes); the caller gets
it as ``RunResult.data`` (capped at ``data_bytes``, then ``data_truncated``).
All three pipes are read concurrently so the child never blocks on a full one.

Fallback without bubblewrap (not installed, or the probe fails): a loud
warning, then the command runs as the caller's user with the same rlimits
(except NPROC), memory cgroup, seccomp filter, session keyring, watchdog,
cleared environment and private home.  A small shim
acts as child subreaper, so processes that double-fork or setsid are still
found and killed.  There is no namespace, so paths can not be remapped; a
private directory ``root`` stands in for ``/``:

* each Mount's target becomes a symlink ``root/<target>`` -> its source (not
  read-only!), ``/scratch`` becomes ``root/scratch`` and ``TMPDIR`` is
  ``root/tmp``;
* every argv item, ``cwd`` and every ``env`` value that starts with a mount
  target or ``/scratch`` is rewritten to start with ``root`` instead;
* the environment variable ``SANDBOX_ROOT`` holds that prefix (``""`` inside
  the real sandbox), so code inside can build other paths as
  ``os.environ["SANDBOX_ROOT"] + "/sandbox/data"``.

Pass ``require_sandbox=True`` to refuse the fallback (``SandboxUnavailable``).

GPU: ``run_sandboxed(..., gpu=True)`` (``--device cuda``) adds what CUDA's driver needs of the host and
nothing more: the ``/dev/nvidia*`` nodes, ``/sys`` read-only, the grader's ``LD_LIBRARY_PATH`` and
``CUDA_VISIBLE_DEVICES``, and as root the device nodes' group when they are not open to everyone (``gpu``).

The package, one job a module: ``limits`` (the values a run takes and gives), ``shim`` (the first program
inside), ``command`` (bubblewrap's command line, or the fallback's), ``gpu`` (what a CUDA run gets of the host),
``watchdog`` (pipes, limits, turns, kills) and ``launch`` (a run from start to end, and whether bubblewrap works
here). The fork server uses
``command.bwrap_argv``, ``command.pick_uid``, ``command.rlimits``, ``command.python_dirs`` and
``watchdog.supervise``, ``watchdog.process_tree``, ``watchdog.kill_sandbox``, ``watchdog.kill``.
"""

from .command import seccomp_program
from .launch import FALLBACK_WARNING, bwrap_available, run_sandboxed
from .limits import RUN_NICE, WAIT_NICE, Limits, Mount, RunResult, SandboxUnavailable, TurnCancelled
from .watchdog import memory_accounting

__all__ = [
    "FALLBACK_WARNING",
    "RUN_NICE",
    "WAIT_NICE",
    "Limits",
    "Mount",
    "RunResult",
    "SandboxUnavailable",
    "TurnCancelled",
    "bwrap_available",
    "memory_accounting",
    "run_sandboxed",
    "seccomp_program",
]
