"""Find the isolation this host gives for an `--isolation` mode, by trying it.

The namespaced candidate is proven by really running `true` in it: its layers count
only when a program has run under them here, not when the kernel merely advertises
them. Should it fail, the fallback (rlimits, with a uid per slot when root) is taken
unprobed: it needs nothing of the kernel but setuid and setrlimit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.isolation import (
    STRICT_LAYERS,
    Isolation,
    IsolationMode,
    IsolationUnavailable,
)
from dcodex.shared.sandbox.run import run_sandboxed
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.slot_cgroups import (
    cgroup_version,
    create_slot_cgroup,
    slot_cgroup_name,
)
from dcodex.shared.sandbox.workspace import workspace

PROBE_PROCESSES = 4096
_PROBE_LIMITS = EffectiveLimits(
    cpu_time_s=2,
    wall_time_s=10,
    memory_bytes=256 * 2**20,
    output_bytes=4096,
    # RLIMIT_NPROC counts every process of the uid on the host, those of other runners
    # sharing the uid range included: a probe must not fail because they are busy.
    processes=PROBE_PROCESSES,
    file_size_bytes=2**20,
)


async def detect_isolation(mode: IsolationMode, *, disk_bytes: int, probe_uid: int) -> Isolation:
    """The isolation for `mode`; raises IsolationUnavailable when `strict` can't be had.

    `probe_uid` is a uid the probe may run as (the first slot's), used when root.
    """
    root = os.geteuid() == 0
    fallback = Isolation(slot_uids=root, disk_bytes=disk_bytes)
    if mode == "rlimits":
        return _separating(fallback)
    candidate = Isolation(
        slot_uids=root,
        namespaces=True,
        user_namespace=not root,
        cgroups=root and _cgroups_work(),
        disk_bytes=disk_bytes,
    )
    failure = await _failure(candidate, probe_uid if root else None)
    achieved = fallback if failure else candidate
    missing = [layer for layer in STRICT_LAYERS if layer not in achieved.layers]
    if mode == "best" or not missing:
        return _separating(achieved)
    reason = failure or _missing_reason(root, achieved)
    raise IsolationUnavailable(
        f"--isolation strict needs the layers {', '.join(missing)}, "
        f"which this host does not give ({reason}); "
        "use --isolation best to take what it offers"
    )


def _separating(isolation: Isolation) -> Isolation:
    """`isolation`, if it keeps one run from reaching the next; else IsolationUnavailable.

    Without namespaces only a uid of the slot's own does (its leftovers are swept after
    every run); without both, programs would run as the service's own user, able to
    signal it and each other and to leave anything behind.
    """
    if isolation.namespaces or isolation.slot_uids:
        return isolation
    raise IsolationUnavailable(
        "without namespaces the sandbox needs a uid per slot, so the service must run as "
        "root: else every program would run as the service's own user"
    )


async def _failure(isolation: Isolation, uid: int | None) -> str | None:
    """None when `true` runs under `isolation`, else why it does not."""
    true = shutil.which("true", path=clean_env(Path("/"))["PATH"])
    if true is None:
        return "there is no `true` program to probe with"
    try:
        with workspace(prefix="dcodex-probe-") as cwd:
            result = await run_sandboxed(
                [true], cwd=cwd, limits=_PROBE_LIMITS, slot=Slot(0, uid, uid, isolation)
            )
    except OSError as error:
        return str(error)
    if result.exit_code != 0:
        return f"a probe program ended with {result.exit_code or result.signal}: " + (
            result.stderr.decode(errors="replace").strip()
        )
    return None


def _missing_reason(root: bool, achieved: Isolation) -> str:
    if not root:
        return "a uid per sandbox slot and the slots' cgroups need the service to run as root"
    if not achieved.cgroups:
        return (
            f"no writable cgroup {cgroup_version()} with the memory and pids controllers "
            "(cgroup v1 also cpuacct) for the service's slots: docs/production.md says "
            "what a container needs"
        )
    return "the host refused a layer"


def _cgroups_work() -> bool:
    cgroup = create_slot_cgroup(slot_cgroup_name("probe", 0))
    if cgroup is None:
        return False
    cgroup.remove()
    return True
