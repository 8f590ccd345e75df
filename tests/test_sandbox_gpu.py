"""What a sandbox for a CUDA run gets of the host (autograder/sandbox/gpu.py), proven on a machine without a GPU:
sysfs read-only, the grader's driver library path, the GPU's device nodes with their group, and nothing of it in a
CPU run. Whether CUDA itself then starts inside is for a GPU machine (bench/gpu_proof.sh, issue 17)."""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from autograder import sandbox as sb
from autograder.sandbox import Limits, gpu, run_sandboxed

pytestmark = [pytest.mark.sandbox]

LIMITS = Limits(wall_seconds=60)


@pytest.fixture(autouse=True)
def need_bwrap():
    if not sb.bwrap_available():
        pytest.fail(f"bubblewrap unusable here: {sb.launch.probe()}")


def inside(code: str, *, on_gpu: bool) -> dict:
    r = run_sandboxed([sys.executable, "-c", textwrap.dedent(code)], mounts=[], limits=LIMITS, gpu=on_gpu,
                      require_sandbox=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def open_to_all(path: Path) -> Path:
    """As root the sandbox runs under an unrelated uid; pytest's tmp folders are 0700."""
    for p in [path, *path.parents]:
        if p == Path("/tmp") or p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o755)
    return path


SYSFS = """
    import json, os
    seen = {"sys": os.path.isdir("/sys/devices/system/node"), "pci": os.path.isdir("/sys/bus/pci")}
    try:
        open("/sys/kernel/mm/transparent_hugepage/enabled", "w").write("never")
        seen["written"] = True
    except OSError as exc:
        seen["written"] = type(exc).__name__
    print(json.dumps(seen))
"""


def test_a_gpu_run_reads_sysfs_and_can_not_change_it_and_a_cpu_run_has_no_sysfs():
    # cuInit reads the PCI devices and NUMA nodes in sysfs: without them CUDA does not start (gpu.py)
    on_gpu = inside(SYSFS, on_gpu=True)
    assert on_gpu["sys"] and on_gpu["pci"]
    assert on_gpu["written"] in ("PermissionError", "OSError")
    on_cpu = inside(SYSFS, on_gpu=False)
    assert not on_cpu["sys"] and not on_cpu["pci"]


def test_a_gpu_run_finds_the_driver_library_on_the_graders_library_path(tmp_path, monkeypatch):
    # As in NVIDIA's images: libcuda.so.1 in a folder outside the system's, named only by LD_LIBRARY_PATH. A
    # real shared library stands in for it (zlib, renamed), so the dynamic linker itself is put to the test.
    lib = tmp_path / "nvidia" / "lib64"
    lib.mkdir(parents=True)
    zlib = ctypes.util.find_library("z")
    source = next(p for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                              "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64") if (p := Path(d) / zlib).exists())
    shutil.copy(source, lib / "libcuda.so.1")
    (lib / "libcuda.so.1").chmod(0o644)
    open_to_all(lib)
    monkeypatch.setenv("LD_LIBRARY_PATH", f"relative/lib:/no/such/folder:{lib}:/usr/lib")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    code = f"""
        import ctypes, json, os
        seen = {{"path": os.environ.get("LD_LIBRARY_PATH"), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}}
        try:
            seen["zlib"] = ctypes.CDLL("libcuda.so.1").zlibVersion is not None
        except OSError as exc:
            seen["zlib"] = str(exc)
        try:
            open({str(lib / "planted.so")!r}, "w")
            seen["written"] = True
        except OSError as exc:
            seen["written"] = type(exc).__name__
        print(json.dumps(seen))
    """
    on_gpu = inside(code, on_gpu=True)
    assert on_gpu["zlib"] is True, on_gpu
    assert on_gpu["path"] == f"relative/lib:/no/such/folder:{lib}:/usr/lib" and on_gpu["visible"] == "1"
    assert on_gpu["written"] != True  # noqa: E712 - bound read-only (or not at all)
    assert not (lib / "planted.so").exists()
    on_cpu = inside(code, on_gpu=False)
    assert on_cpu["path"] is None and on_cpu["visible"] is None
    assert "libcuda.so.1" in on_cpu["zlib"]  # the CPU run is not given the folder


def test_the_access_binds_only_what_the_sandbox_lacks(tmp_path):
    lib = tmp_path / "drivers"
    lib.mkdir()
    link = tmp_path / "current"
    link.symlink_to(lib)
    access = gpu.access(dev=str(tmp_path / "no-dev"), environ={
        "LD_LIBRARY_PATH": f"rel:{link}:/usr/lib:{tmp_path / 'missing'}:{lib}", "CUDA_VISIBLE_DEVICES": "0,1",
        "SECRET_TOKEN": "x"}, system_dirs=("/usr", "/lib"))
    assert access.devices == () and access.groups == ()
    assert access.read_only == ("/sys", str(link), str(lib))  # the link's own path and where it leads, once
    assert access.env == {"LD_LIBRARY_PATH": f"rel:{link}:/usr/lib:{tmp_path / 'missing'}:{lib}",
                          "CUDA_VISIBLE_DEVICES": "0,1"}


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid switch, and with it the device nodes' group, is root's")
def test_device_nodes_are_bound_as_devices_and_a_closed_nodes_group_joins_the_sandbox_uid(tmp_path, monkeypatch):
    # Two character devices standing in for a GPU's, both /dev/null's (1, 3): one open to all (as the driver
    # makes them by default), one 0660 to a group (NVreg_DeviceFileMode=0660 and a group, e.g. "video").
    dev = tmp_path / "dev"
    dev.mkdir()
    open_to_all(dev)
    group = 4242
    os.mknod(dev / "nvidiactl", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(dev / "nvidia0", stat.S_IFCHR | 0o660, os.makedev(1, 3))
    os.chown(dev / "nvidia0", 0, group)
    os.chmod(dev / "nvidiactl", 0o666)
    os.chmod(dev / "nvidia0", 0o660)
    access = gpu.access(dev=str(dev), environ={})
    assert access.devices == (str(dev / "nvidia0"), str(dev / "nvidiactl")) and access.groups == (group,)
    code = f"""
        import json, os
        seen = {{"groups": os.getgroups()}}
        for name in ("nvidia0", "nvidiactl"):
            try:
                with open({str(dev)!r} + "/" + name, "wb") as f:
                    f.write(b"x")
                seen[name] = "written"
            except OSError as exc:
                seen[name] = type(exc).__name__
        print(json.dumps(seen))
    """
    monkeypatch.setattr(gpu, "access", lambda **kw: access)
    seen = inside(code, on_gpu=True)
    assert seen == {"groups": [group], "nvidia0": "written", "nvidiactl": "written"}
    monkeypatch.setattr(gpu, "access", lambda **kw: gpu.GpuAccess(devices=access.devices, read_only=("/sys",)))
    seen = inside(code, on_gpu=True)
    assert seen == {"groups": [], "nvidia0": "PermissionError", "nvidiactl": "written"}
