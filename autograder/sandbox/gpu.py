"""What a CUDA run needs of the host, and nothing more: what `bwrap_argv` adds to a sandbox that grades on a GPU.

CUDA's driver library talks to the kernel module through device nodes and reads about the machine in sysfs.
Each item below is something a sandbox built for the CPU does not have, and without which CUDA does not start:

- the device nodes `/dev/nvidia*` (nvidiactl, nvidia-uvm, one per GPU, the nvidia-caps folder), bound with
  `--dev-bind`: bwrap's own /dev is mounted nodev, so a plain bind of a node onto it opens nothing;
- `/sys`, read-only: the driver reads the PCI devices and NUMA nodes there, and `cuInit` fails with
  CUDA_ERROR_OPERATING_SYSTEM (304) without it (others running CUDA under bubblewrap found the same); sysfs is
  the kernel's description of the hardware, and the sandbox's uid can not write it;
- the driver's library `libcuda.so.1` where the dynamic linker looks: GPU images often have it only on
  `LD_LIBRARY_PATH` (NVIDIA's containers: /usr/local/nvidia/lib64), and the sandbox's environment is cleared,
  so the grader's `LD_LIBRARY_PATH` goes in and its folders outside the system folders are bound read-only;
- `CUDA_VISIBLE_DEVICES`, where the TA set it: the GPU they chose for the batch is the one the runs see;
- as root, the sandbox's uid is a stranger to the device nodes: the groups of nodes that are not open to
  everyone (a driver set up with NVreg_DeviceFileMode=0660, say) become the uid's supplementary groups.

Nothing else of the host comes in: no /run (the persistence daemon's socket is for nvidia-smi, not CUDA), no
/etc beyond what every sandbox has.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

PASSED_ENV = ("LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES")


@dataclass(frozen=True)
class GpuAccess:
    devices: tuple[str, ...] = ()  # --dev-bind, same path
    read_only: tuple[str, ...] = ()  # --ro-bind, same path: /sys and library folders outside the system's
    env: dict[str, str] = field(default_factory=dict)  # added to the sandbox's environment
    groups: tuple[int, ...] = ()  # supplementary groups of the sandbox's uid (as root)


def access(dev: str = "/dev", environ: dict[str, str] | None = None,
           system_dirs: tuple[str, ...] = ()) -> GpuAccess:
    """What a CUDA run is given on this machine. `system_dirs`: folders every sandbox binds already."""
    environ = os.environ if environ is None else environ
    devices = tuple(str(p) for p in sorted(Path(dev).glob("nvidia*")))
    env = {k: environ[k] for k in PASSED_ENV if environ.get(k)}
    libs = []
    for d in env.get("LD_LIBRARY_PATH", "").split(":"):
        if not d.startswith("/") or not os.path.isdir(d):
            continue  # relative entries and missing folders: nothing the linker could find there in the sandbox
        real = os.path.realpath(d)
        for p in dict.fromkeys((os.path.abspath(d), real)):
            if not any(p == s or p.startswith(s + "/") for s in system_dirs) and p not in libs:
                libs.append(p)
    groups = []
    for node in devices:
        try:
            st = os.stat(node)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_mode & 0o006 != 0o006 and st.st_mode & 0o060 == 0o060:
            groups.append(st.st_gid)
    read_only = (("/sys",) if os.path.isdir("/sys") else ()) + tuple(libs)
    return GpuAccess(devices=devices, read_only=read_only, env=env, groups=tuple(sorted(set(groups))))
