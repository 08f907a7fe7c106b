"""Per-slot control groups on the unified hierarchy (cgroup v2), as `cgroups.py` does
for v1: the kernel limits a whole run's memory and processes, counts its CPU time,
records its peak memory and says whether it OOM-killed a process of it.

Where the service's own cgroup lives (a node with systemd's `Delegate=yes`, or a
container with its own cgroup namespace, whose root is the container's cgroup):

- v2 forbids processes in a cgroup whose children get controllers ("no internal
  processes"), except at the root of the whole hierarchy. So the processes of the
  service's cgroup move into a leaf child, `dcodex-service`, before `+memory +pids
  +cpu` is enabled for the children; slots are siblings of that leaf.
- Container runtimes mount /sys/fs/cgroup read-only: `cgroup_mounts` mounts a fresh,
  writable one over it when the container has a cgroup namespace of its own, where it
  shows exactly the container's own cgroup.

Each run gets a fresh directory (removed and made again by `prepare`): `memory.peak`
and the event counters can only be reset that way before Linux 6.12.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from dcodex.shared.sandbox.cgroup_mounts import ensure_writable_cgroupfs
from dcodex.shared.sandbox.cgroups import CgroupUsage
from dcodex.shared.sandbox.cgroups import field as _field
from dcodex.shared.sandbox.cgroups import read_int as _read_int
from dcodex.shared.sandbox.cgroups import read_text as _read_text
from dcodex.shared.sandbox.cgroups import write_int as _write
from dcodex.shared.sandbox.pidfds import kill_listed

# The controllers the layers need; `cpu` (the cores cap) is taken when offered.
REQUIRED = ("memory", "pids")
OPTIONAL = ("cpu",)
# Where the service's own processes go when its cgroup hands controllers to slots.
SERVICE_LEAF = "dcodex-service"
CPU_PERIOD_US = 100_000
# The files a slot must have for every layer (memory.peak: Linux 5.19 or later).
_SLOT_FILES = ("memory.max", "memory.peak", "memory.events", "pids.max", "pids.events")
_MOUNT_POINT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class _Baseline:
    oom_kills: int
    fork_failures: int
    cpu_usec: int


class SlotCgroupV2:
    """One slot's cgroup v2 directory, made afresh for each run."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._baseline = _Baseline(0, 0, 0)
        self.cores: float | None = None

    @property
    def paths(self) -> list[str]:
        return [str(self.directory)]

    def prepare(self, memory_bytes: int, processes: int) -> None:
        """Set the limits of the next run; its peak and counters start from zero."""
        self._renew()
        _write(self.directory / "memory.max", memory_bytes)
        # v1's memory+swap limit, in v2 terms: a run never swaps past its limit.
        with contextlib.suppress(FileNotFoundError):
            _write(self.directory / "memory.swap.max", 0)
        # One for the namespace's reaper, which lives in the cgroup too (the helper not).
        _write(self.directory / "pids.max", processes + 1)
        if self.cores is not None:
            self._write_cpu_max(self.cores)
        self._baseline = _Baseline(self._oom_kills(), self._fork_failures(), self._cpu_usec())

    def cpu_seconds(self) -> float:
        """CPU time of every process of the run so far (user and system)."""
        return (self._cpu_usec() - self._baseline.cpu_usec) / 1e6

    def limit_cores(self, cores: float | None) -> bool:
        """At most `cores` CPUs' worth of time per period for the whole run (cpu.max;
        None: no cap), kept for the following runs; whether a cap is in force. Raises
        OSError without the cpu controller."""
        self.cores = cores
        if cores is None:
            (self.directory / "cpu.max").write_text(f"max {CPU_PERIOD_US}")
            return False
        self._write_cpu_max(cores)
        return True

    def processes(self) -> list[int]:
        return [int(pid) for pid in _read_text(self.directory / "cgroup.procs").split()]

    def kill_all(self) -> list[int]:
        """SIGKILL every process still in the cgroup; the pids that were there."""
        return kill_listed(self.processes)

    def usage(self) -> CgroupUsage:
        """The counters of the run since `prepare` (call once everything has exited)."""
        return CgroupUsage(
            cpu_time_ms=self.cpu_seconds() * 1000,
            peak_memory_bytes=_read_int(self.directory / "memory.peak"),
            oom_killed=self._oom_kills() > self._baseline.oom_kills,
            process_limit_hit=self._fork_failures() > self._baseline.fork_failures,
        )

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.directory.rmdir()

    def _renew(self) -> None:
        """A fresh directory: new peak and counters. Should a process of the last run
        linger (it cannot: the namespace's pid 1 took them all), keep the old one and
        count from the baselines."""
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        self.directory.mkdir(exist_ok=True)

    def _write_cpu_max(self, cores: float) -> None:
        quota = max(1000, round(cores * CPU_PERIOD_US))
        (self.directory / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")

    def _cpu_usec(self) -> int:
        return _field(_read_text(self.directory / "cpu.stat"), "usage_usec")

    def _oom_kills(self) -> int:
        return _field(_read_text(self.directory / "memory.events"), "oom_kill")

    def _fork_failures(self) -> int:
        return _field(_read_text(self.directory / "pids.events"), "max")


def create_slot_cgroup(name: str, cores: float | None = None) -> SlotCgroupV2 | None:
    """A cgroup named `name` for a slot, or None where cgroup v2 can't give every layer;
    its runs are capped at `cores` CPUs (None or 0: no cap)."""
    base = delegated_cgroup()
    if base is None:
        return None
    cgroup = SlotCgroupV2(base / name)
    try:
        cgroup.prepare(2**30, 1)  # proves every file we need is there and writable
        if not all((cgroup.directory / file).exists() for file in _SLOT_FILES):
            raise FileNotFoundError(errno.ENOENT, "a cgroup v2 file is missing")
    except OSError:
        cgroup.remove()
        return None
    if cores:
        with contextlib.suppress(OSError):  # no cap where the cpu controller is not given
            cgroup.limit_cores(cores)
    return cgroup


def delegated_cgroup() -> Path | None:
    """The cgroup under which slots are made, with memory and pids (and cpu, when
    offered) enabled for its children; None on a host without such a cgroup v2."""
    base = own_cgroup()
    if base is None:
        return None
    offered = set(_words(base / "cgroup.controllers"))
    if not set(REQUIRED) <= offered:
        return None
    wanted = [c for c in (*REQUIRED, *OPTIONAL) if c in offered]
    try:
        _enable(base, wanted)
    except OSError:
        return None
    return base


def own_cgroup() -> Path | None:
    """This process's cgroup v2 directory (the parent of the service leaf, once moved
    there), writable; None when there is no cgroup v2 here."""
    if not is_pure_v2():
        return None
    mount = _cgroup2_mount()
    if mount is None:
        return None
    root, where, read_only = mount
    if read_only and not ensure_writable_cgroupfs():
        return None
    root, where, _ = _cgroup2_mount() or mount
    path = _own_v2_path()
    if path is None:
        return None
    relative = os.path.relpath(path, root) if path.startswith(root) else path
    directory = where / relative.lstrip("/").removeprefix(".")
    if directory.name == SERVICE_LEAF:
        directory = directory.parent
    return directory


def is_pure_v2() -> bool:
    """True where the unified hierarchy has the memory and pids controllers."""
    mount = _cgroup2_mount()
    if mount is None:
        return False
    return set(REQUIRED) <= set(_words(mount[1] / "cgroup.controllers"))


def _enable(base: Path, controllers: list[str]) -> None:
    """Enable `controllers` for the children of `base`, first moving the processes of
    `base` into the service leaf when v2's no-internal-processes rule demands it."""
    enabled = set(_words(base / "cgroup.subtree_control"))
    missing = [c for c in controllers if c not in enabled]
    if not missing:
        return
    request = " ".join(f"+{c}" for c in missing)
    try:
        (base / "cgroup.subtree_control").write_text(request)
        return
    except OSError as error:
        if error.errno != errno.EBUSY:
            raise
    leaf = base / SERVICE_LEAF
    leaf.mkdir(exist_ok=True)
    for pid in _words(base / "cgroup.procs"):
        # A process may end meanwhile, and a kernel thread may not move: neither matters.
        with contextlib.suppress(ProcessLookupError, OSError):
            (leaf / "cgroup.procs").write_text(pid)
    (base / "cgroup.subtree_control").write_text(request)


def _cgroup2_mount() -> tuple[str, Path, bool] | None:
    """The cgroup2 mount at /sys/fs/cgroup (or the first elsewhere): its root, where
    it is and whether it is read-only. The last mount on a point is the one seen."""
    found: list[tuple[str, Path, bool]] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fs_type = right.split()[0] if right else ""
            if fs_type != "cgroup2":
                continue
            fields = left.split()
            root, mount_point, options = fields[3], Path(fields[4]), fields[5]
            found.append((root, mount_point, "ro" in options.split(",")))
    preferred = [mount for mount in found if mount[1] == _MOUNT_POINT]
    chosen = preferred or found
    return chosen[-1] if chosen else None


def _own_v2_path() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, _controllers, path = line.split(":", 2)
            if hierarchy == "0":
                return path
    return None


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []
