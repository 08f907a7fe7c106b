"""Writable cgroup file systems inside a container.

Container runtimes (Docker, containerd, CRI-O) mount /sys/fs/cgroup read-only in a
container that is not privileged. In a container with a cgroup namespace of its own
(the default on cgroup v2 hosts; `docker run --cgroupns private`) that mount shows only
the container's own subtree, so with CAP_SYS_ADMIN the runner remounts it writable
(the mount, not the file system: a fresh mount of the same file system over it is
refused) and makes its slots there; nothing else on the node becomes writable.

This is done only at the root of a cgroup namespace: in the host's namespace the
mount would show every cgroup of the node.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The v1 controllers the slots use (cgroups.py) and where v2 keeps the service itself.
_V1_WANTED = {"memory", "pids", "cpuacct"}
_SERVICE_LEAF = "/dcodex-service"
# mount(2) flags (linux/mount.h): a bind remount, and the per-mount options to keep.
_REMOUNT = 32 | 4096  # MS_REMOUNT | MS_BIND
_FLAGS = {
    "nosuid": 2,
    "nodev": 4,
    "noexec": 8,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
}


@dataclass(frozen=True)
class CgroupMount:
    mount_point: Path
    fs_type: str  # "cgroup" (v1) or "cgroup2"
    controllers: tuple[str, ...]  # v1: the hierarchy's controllers (super options)
    read_only: bool
    flags: tuple[str, ...] = ()  # the mount's own options (nosuid, nodev, ...)


def cgroup_mounts() -> list[CgroupMount]:
    """The cgroup file systems under /sys/fs/cgroup, in mount order."""
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fs_type, _source, super_options = [*right.split(), "", "", ""][:3]
            if fs_type not in ("cgroup", "cgroup2"):
                continue
            fields = left.split()
            point = Path(fields[4])
            if point != CGROUP_ROOT and CGROUP_ROOT not in point.parents:
                continue
            controllers = tuple(
                option
                for option in super_options.split(",")
                if option not in ("rw", "ro") and "=" not in option and option != "nsdelegate"
            )
            flags = tuple(fields[5].split(","))
            mounts.append(CgroupMount(point, fs_type, controllers, "ro" in flags, flags))
    return mounts


def at_cgroup_namespace_root() -> bool:
    """Whether every hierarchy shows this process at "/" (or in v2's service leaf):
    what a process at the root of its own cgroup namespace sees."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return False
    return bool(lines) and all(line.split(":", 2)[2] in ("/", _SERVICE_LEAF) for line in lines)


def ensure_writable_cgroupfs() -> bool:
    """Mount writable cgroup file systems over the read-only ones the slots need.
    True when none of those is read-only any more."""
    stale = [mount for mount in _latest(cgroup_mounts()) if mount.read_only and _needed(mount)]
    if not stale:
        return True
    if os.geteuid() != 0 or not at_cgroup_namespace_root():
        return False
    # Imported here: only a container with read-only cgroup mounts gets this far, and
    # ctypes costs every runner memory it would otherwise keep idle.
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    for mount in stale:
        # A bind remount changes this mount's flags only; the others are kept (in a
        # user namespace, clearing a flag the runtime set is refused).
        flags = _REMOUNT | sum(_FLAGS.get(flag, 0) for flag in mount.flags if flag != "ro")
        if libc.mount(None, bytes(mount.mount_point), None, flags, None) != 0:
            return False
    return True


def _latest(mounts: list[CgroupMount]) -> list[CgroupMount]:
    """The mount seen at each point: the last one made there."""
    return list({mount.mount_point: mount for mount in mounts}.values())


def _needed(mount: CgroupMount) -> bool:
    return mount.fs_type == "cgroup2" or bool(_V1_WANTED & set(mount.controllers))
