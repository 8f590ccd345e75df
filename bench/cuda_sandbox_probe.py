"""Does CUDA start inside the kit's sandbox on this machine, and if not, which part of the sandbox stops it?

The first step of bench/gpu_proof.sh on a GPU machine (issue 17). Prints the machine's facts (driver, device
nodes and their modes, where libcuda.so.1 is found, bubblewrap, the memory accounting), then runs one small
training step on the GPU in a sandbox built as the grader builds it (`run_sandboxed(..., gpu=True)`) and, for
the record, in variants that each take one thing away or add one back:

    kit            the sandbox as grading builds it for --device cuda
    no-sysfs       the same without /sys (gpu.py says cuInit fails without it: this row shows whether it does)
    no-seccomp     the same without the seccomp filter
    no-libpath     the same without the grader's LD_LIBRARY_PATH
    bwrap-bare     bwrap with the host's / bound whole and its /dev: CUDA under bubblewrap at all
    host           no sandbox

Each row: whether CUDA was available, the step's result, the run's seconds and peak resident memory (what the
watchdog counts against memory_mb), the GPU memory torch allocated, and the error's last line. Also writes
them as JSON to $OUT/probe.json when OUT is set. Exit status 0 when the kit row trained on the GPU.

    MNIST_DIR=... python bench/cuda_sandbox_probe.py     (MNIST is not read; the variable is not needed)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder import sandbox  # noqa: E402
from autograder.sandbox import Limits, command, gpu, launch  # noqa: E402

STEP = textwrap.dedent("""
    import json, os, sys, time, traceback
    seen = {}
    started = time.perf_counter()
    try:
        import torch
        seen["torch"] = torch.__version__
        seen["available"] = torch.cuda.is_available()
        seen["count"] = torch.cuda.device_count()
        dev = torch.device("cuda")
        seen["name"] = torch.cuda.get_device_name(0)
        torch.backends.cudnn.allow_tf32 = False
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 3, 3),
                                  torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2), torch.nn.Flatten(),
                                  torch.nn.Linear(432, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(64, 1, 28, 28, device=dev), torch.randint(0, 10, (64,), device=dev)
        for _ in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        seen["loss"] = round(loss.item(), 4)
        seen["gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except BaseException as exc:
        seen["error"] = (traceback.format_exception_only(exc)[-1].strip())[-400:]
    seen["inside_s"] = round(time.perf_counter() - started, 2)
    print("PROBE " + json.dumps(seen))
""")


def parse(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    return {}


def in_sandbox(label: str, patches: dict | None = None) -> dict:
    """The kit's own sandbox (run_sandboxed, gpu=True), with `patches` applied to it for this run only."""
    saved = {}
    for (module, name), value in (patches or {}).items():
        saved[(module, name)] = getattr(module, name)
        setattr(module, name, value)
    try:
        r = sandbox.run_sandboxed([sys.executable, "-I", "-c", STEP], mounts=[], gpu=True, require_sandbox=True,
                                  limits=Limits(wall_seconds=180, memory_mb=16384))
        row = {"variant": label, "exit": r.returncode, "killed_for": r.killed_for, "seconds": round(r.seconds, 1),
               "peak_rss_mb": round(r.peak_rss_mb), **parse(r.stdout)}
        if not row.get("available") and "error" not in row:
            row["error"] = r.stderr.strip().splitlines()[-1][-400:] if r.stderr.strip() else "no output"
    except Exception as exc:  # a variant that can not even start is a row too
        row = {"variant": label, "error": f"{type(exc).__name__}: {exc}"[-400:]}
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)
        command.seccomp_program.cache_clear()
    return row


def outside(label: str, argv_prefix: list[str]) -> dict:
    try:
        done = subprocess.run([*argv_prefix, sys.executable, "-I", "-c", STEP], capture_output=True, text=True,
                              timeout=180)
        row = {"variant": label, "exit": done.returncode, **parse(done.stdout)}
        if "available" not in row:
            row["error"] = (done.stderr.strip().splitlines() or ["no output"])[-1][-400:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        row = {"variant": label, "error": f"{type(exc).__name__}: {exc}"[-400:]}
    return row


def facts() -> list[str]:
    lines = [f"python {sys.version.split()[0]} at {sys.executable}; uid {os.geteuid()}; cores {os.cpu_count()}"]
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
        lines.append(f"nvidia-smi: {q.stdout.strip() or q.stderr.strip()}")
    for p in sorted(Path("/dev").glob("nvidia*")):
        st = p.stat()
        lines.append(f"{p}: {stat.filemode(st.st_mode)} uid {st.st_uid} gid {st.st_gid}")
    lines.append(f"LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')!r} "
                 f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}")
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    lines.append("ldconfig libcuda: " + (", ".join(ln.split("=>")[-1].strip() for ln in ldconfig.splitlines()
                                                    if "libcuda.so" in ln) or "none"))
    bwrap = shutil.which("bwrap")
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip() if bwrap else ""
    lines.append(f"bwrap: {bwrap} {version}; the kit's probe: {launch.probe() or 'works'}")
    lines.append(f"memory accounting: {sandbox.memory_accounting()}")
    access = gpu.access(system_dirs=command.bound_dirs())
    lines.append(f"a CUDA sandbox gets: devices {list(access.devices)}, read-only {list(access.read_only)}, "
                 f"env {sorted(access.env)}, groups {list(access.groups)}")
    return lines


def main() -> int:
    for line in facts():
        print(line)
    access = gpu.access(system_dirs=command.bound_dirs())
    no_sys = gpu.GpuAccess(access.devices, tuple(d for d in access.read_only if d != "/sys"), access.env, access.groups)
    no_lib = gpu.GpuAccess(access.devices, ("/sys",), {k: v for k, v in access.env.items() if k != "LD_LIBRARY_PATH"},
                           access.groups)
    rows = [
        in_sandbox("kit"),
        in_sandbox("no-sysfs", {(gpu, "access"): lambda **kw: no_sys}),
        in_sandbox("no-seccomp", {(command, "seccomp_program"): lambda: None}),
        in_sandbox("no-libpath", {(gpu, "access"): lambda **kw: no_lib}),
    ]
    bwrap = shutil.which("bwrap")
    if bwrap:
        rows.append(outside("bwrap-bare", [bwrap, "--dev-bind", "/", "/", "--proc", "/proc", "--unshare-pid",
                                           "--unshare-net", "--die-with-parent", "--"]))
    rows.append(outside("host", []))
    cols = ("variant", "available", "loss", "seconds", "peak_rss_mb", "gpu_mb", "killed_for", "error")
    print()
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row.get(c, "")) for c in cols))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "probe.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0 if rows[0].get("available") and "loss" in rows[0] else 1


if __name__ == "__main__":
    sys.exit(main())
