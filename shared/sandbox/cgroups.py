"""Per-slot control groups: exact memory, process and CPU accounting for a whole run.

With a cgroup per sandbox slot the kernel itself limits the resident memory and the
number of processes of everything a run starts, counts its CPU time, records its peak
memory and says whether it was OOM-killed: the verdicts need no inference.

This module is cgroup v1 (the memory, pids and cpuacct controllers, and optionally
cpu, mounted separately or together) and the file helpers both versions use;
`cgroups_v2.py` is the unified hierarchy, and `slot_cgroups.py` picks one. Where
neither gives every controller, `create_slot_cgroup` returns None and the sandbox
falls back to rlimits and the reaper's rusage.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from dcodex.shared.sandbox.pidfds import kill_listed

CONTROLLERS = ("memory", "pids", "cpuacct")
# Optional: where it is mounted, a run's cores are capped (the CFS bandwidth quota).
CPU_CONTROLLER = "cpu"
_CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class CgroupUsage:
    """What the kernel recorded for one run."""

    cpu_time_ms: float
    peak_memory_bytes: int
    oom_killed: bool  # the memory limit was hit and the kernel killed a process
    process_limit_hit: bool  # a fork failed at the process limit


@dataclass(frozen=True)
class _Baseline:
    oom_kills: int
    fork_failures: int


class SlotCgroup:
    """One slot's cgroups (one directory per controller), reused run after run.

    The interface the sandbox uses (a cgroup v2 backend implements the same):

    - `paths`: the directories the helper joins (writes itself to `cgroup.procs`)
      before anything of the run starts;
    - `prepare(memory_bytes, processes)`: the limits of the next run, and its counters
      reset to zero;
    - `limit_cores(cores)`: cap the CPU bandwidth of every run of the slot at `cores`
      CPUs (None: no cap); returns whether the cap is in force; `cores` is the cap;
    - `cpu_seconds()`: CPU time of the whole process tree since `prepare`, live: the
      supervisor polls it to stop the tree at its CPU limit;
    - `usage()`: the run's CPU time, peak memory, and whether the kernel OOM-killed or
      refused a fork (call once everything has exited);
    - `processes()`: the pids still in the cgroup; `kill_all()`: SIGKILL them (the
      sandbox does until none is left, before the slot is used again);
    - `remove()`: delete the cgroups (the slot is gone).
    """

    def __init__(self, directories: dict[str, Path]) -> None:
        self.directories = directories
        self.cores: float | None = None
        self._baseline = _Baseline(0, 0)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(str(path) for path in self.directories.values()))

    def limit_cores(self, cores: float | None) -> bool:
        cpu = self.directories.get(CPU_CONTROLLER)
        if cpu is None:
            return False
        quota = -1 if cores is None else max(1000, round(cores * _CFS_PERIOD_US))
        write_int(cpu / "cpu.cfs_period_us", _CFS_PERIOD_US)
        write_int(cpu / "cpu.cfs_quota_us", quota)
        self.cores = cores
        return cores is not None

    def processes(self) -> list[int]:
        text = read_text(self.directories["pids"] / "cgroup.procs")
        return [int(pid) for pid in text.split()]

    def kill_all(self) -> list[int]:
        """SIGKILL every process still in the cgroup; the pids that were there."""
        return kill_listed(self.processes)

    def prepare(self, memory_bytes: int, processes: int) -> None:
        """Set the limits of the next run and reset the peak and CPU counters."""
        memory = self.directories["memory"]
        # memory+swap may never be below memory: lift it, set memory, then bound it too.
        swap_accounting = (memory / "memory.memsw.limit_in_bytes").exists()
        if swap_accounting:
            write_int(memory / "memory.memsw.limit_in_bytes", -1)
        write_int(memory / "memory.limit_in_bytes", memory_bytes)
        if swap_accounting:
            write_int(memory / "memory.memsw.limit_in_bytes", memory_bytes)
        write_int(memory / "memory.max_usage_in_bytes", 0)
        # One for the namespace's reaper, which lives in the cgroup too (the helper not).
        write_int(self.directories["pids"] / "pids.max", processes + 1)
        write_int(self.directories["cpuacct"] / "cpuacct.usage", 0)
        self._baseline = _Baseline(self._oom_kills(), self._fork_failures())

    def cpu_seconds(self) -> float:
        return read_int(self.directories["cpuacct"] / "cpuacct.usage") / 1e9

    def usage(self) -> CgroupUsage:
        """The counters of the run since `prepare` (call once everything has exited)."""
        return CgroupUsage(
            cpu_time_ms=self.cpu_seconds() * 1000,
            peak_memory_bytes=read_int(self.directories["memory"] / "memory.max_usage_in_bytes"),
            oom_killed=self._oom_kills() > self._baseline.oom_kills,
            process_limit_hit=self._fork_failures() > self._baseline.fork_failures,
        )

    def remove(self) -> None:
        for path in set(self.directories.values()):
            with contextlib.suppress(OSError):
                path.rmdir()

    def _oom_kills(self) -> int:
        text = read_text(self.directories["memory"] / "memory.oom_control")
        return field(text, "oom_kill")

    def _fork_failures(self) -> int:
        return field(read_text(self.directories["pids"] / "pids.events"), "max")


def create_slot_cgroup(name: str, cores: float | None = None) -> SlotCgroup | None:
    """Cgroups named `name` under ours for every controller, or None where we can't;
    with the `cpu` controller too, its runs are capped at `cores` CPUs."""
    parents = own_cgroup_dirs()
    if parents is None:
        return None
    created: dict[str, Path] = {}
    try:
        for controller in CONTROLLERS:
            path = parents[controller] / name
            path.mkdir(exist_ok=True)
            created[controller] = path
        cgroup = SlotCgroup(created)
        cgroup.prepare(2**30, 1)  # proves every file we need is there and writable
    except OSError:
        SlotCgroup(created).remove()
        return None
    if CPU_CONTROLLER in parents:
        with contextlib.suppress(OSError):  # no cap where the cpu controller refuses
            path = parents[CPU_CONTROLLER] / name
            path.mkdir(exist_ok=True)
            cgroup.directories[CPU_CONTROLLER] = path
            cgroup.limit_cores(cores)
    return cgroup


def own_cgroup_dirs() -> dict[str, Path] | None:
    """Where this process's v1 cgroup of each controller is mounted, if all are."""
    mounts: dict[str, tuple[str, Path]] = {}  # controller: (root of the mount, where)
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fs_type, _source, options = [*right.split(), "", "", ""][:3]
            if fs_type != "cgroup":
                continue
            root, mount_point = left.split()[3:5]
            for controller in options.split(","):
                if controller in (*CONTROLLERS, CPU_CONTROLLER):
                    mounts[controller] = (root, Path(mount_point))
    own: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _id, names, path = line.split(":", 2)
            for controller in names.split(","):
                if controller in mounts:
                    root, where = mounts[controller]
                    relative = os.path.relpath(path, root) if path.startswith(root) else path
                    own[controller] = where / relative.lstrip("/").removeprefix(".")
    if not all(controller in own for controller in CONTROLLERS):
        return None
    return own


def slot_cgroup_name(service: str, index: int) -> str:
    return f"dcodex-{service}-{os.getpid()}-{index}"


# Reading and writing cgroup files, of either version (cgroups_v2.py uses them too). A
# run reads and writes a dozen of them: raw descriptors, not `Path.read_text` and
# `write_text`, whose text layer costs two to three times the system calls here.


def write_int(path: Path, value: int) -> None:
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.write(descriptor, str(value).encode())
    finally:
        os.close(descriptor)


def read_text(path: Path) -> str:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(descriptor, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(descriptor)


def read_int(path: Path) -> int:
    return int(read_text(path).split()[0])


def field(text: str, name: str) -> int:
    """The value of `name` in a flat-keyed file (`memory.events`, `cpu.stat`, ...)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0
