"""Which cgroup backend a host gets: v2 (`cgroups_v2.py`) where the unified hierarchy
has the memory and pids controllers, else v1 (`cgroups.py`).

Both make a `SlotCgroup`-like object per slot; the code that runs sandboxes sees only
the interface below.
"""

from __future__ import annotations

from typing import Literal, Protocol

from dcodex.shared.sandbox import cgroups, cgroups_v2
from dcodex.shared.sandbox.cgroup_mounts import ensure_writable_cgroupfs
from dcodex.shared.sandbox.cgroups import CgroupUsage

CgroupVersion = Literal["v1", "v2"]


class SlotCgroupBackend(Protocol):
    """What a slot's cgroup does, in either version."""

    @property
    def paths(self) -> list[str]: ...  # the directories the helper joins

    # The cap on CPUs of every run of the slot (None: none).
    cores: float | None

    def prepare(self, memory_bytes: int, processes: int) -> None: ...

    def limit_cores(self, cores: float | None) -> bool: ...  # whether a cap is in force

    def cpu_seconds(self) -> float: ...

    def processes(self) -> list[int]: ...  # the pids still in the cgroup

    def kill_all(self) -> list[int]: ...  # SIGKILL them; the pids that were there

    def usage(self) -> CgroupUsage: ...

    def remove(self) -> None: ...


def cgroup_version() -> CgroupVersion:
    """The hierarchy this host's slots use."""
    return "v2" if cgroups_v2.is_pure_v2() else "v1"


def create_slot_cgroup(name: str, cores: float | None = None) -> SlotCgroupBackend | None:
    """A cgroup for a slot in this host's hierarchy, or None where it can't be had; its
    runs are capped at `cores` CPUs where the cpu controller allows."""
    if cgroup_version() == "v2":
        return cgroups_v2.create_slot_cgroup(name, cores)
    if not ensure_writable_cgroupfs():
        return None
    return cgroups.create_slot_cgroup(name, cores)


slot_cgroup_name = cgroups.slot_cgroup_name
