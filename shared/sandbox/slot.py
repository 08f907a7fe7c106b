"""A slot: the identity one sandboxed run gets (uid, isolation layers, cgroups).

A plain value, so that the code that runs sandboxes and the pool that hands slots out
(`slots.py`) can both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcodex.shared.sandbox.isolation import RLIMITS_ONLY, Isolation
from dcodex.shared.sandbox.slot_cgroups import SlotCgroupBackend


@dataclass(frozen=True)
class Slot:
    index: int
    uid: int | None
    gid: int | None
    isolation: Isolation = RLIMITS_ONLY
    cgroup: SlotCgroupBackend | None = None
    # The uid is shared with runs side by side (probes of trusted toolchains): what is
    # left of a run of this uid is not swept, for it would kill the others.
    shared_uid: bool = False
