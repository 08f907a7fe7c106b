"""The cgroup layers on a host with cgroup v2 only (every current distribution).

These need such a kernel: tests/test_vm_cgroup_v2.py boots one under qemu and runs this
module there, once as on a node (the service at the root of the hierarchy) and once
as in a container (a cgroup namespace of its own whose cgroup file system is mounted
read-only, as Docker and Kubernetes mount it). On other hosts it is skipped, except
where DCODEX_REQUIRE_CGROUP_V2=1 (the guest sets it) turns that into a failure.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dcodex.services.runner.verdict import decide_status
from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.sandbox import cgroups_v2
from dcodex.shared.sandbox.cgroup_mounts import cgroup_mounts
from dcodex.shared.sandbox.isolation import CGROUP_LAYERS, STRICT_LAYERS
from dcodex.shared.sandbox.leftovers import remove_leftovers
from dcodex.shared.sandbox.run import SandboxResult, run_sandboxed
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.slot_cgroups import cgroup_version, slot_cgroup_name
from dcodex.shared.sandbox.slots import SlotPool, open_slot_pool
from dcodex.shared.sandbox.workspace import workspace
from tests.conftest import FORK_UNTIL_REFUSED

REQUIRED = os.environ.get("DCODEX_REQUIRE_CGROUP_V2") == "1"
# "container": the guest runs this module in a cgroup namespace of its own.
SCENARIO = os.environ.get("DCODEX_CGROUP_SCENARIO", "node")

# Root: strict slots (a uid each, their cgroups).
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        not REQUIRED and not cgroups_v2.is_pure_v2(),
        reason="needs a cgroup-v2-only kernel: tests/test_vm_cgroup_v2.py runs it in a VM",
    ),
]

# Generous CPU and wall time: under emulation Python starts in about a second.
LIMITS = EffectiveLimits(
    cpu_time_s=10,
    wall_time_s=30,
    memory_bytes=256 * 2**20,
    output_bytes=64 * 1024,
    processes=16,
    file_size_bytes=2**20,
)


@pytest.fixture
async def pool() -> AsyncIterator[SlotPool]:
    slots = await open_slot_pool(
        "strict", size=2, uid_base=62100, disk_bytes=64 * 2**20, max_queued=None, service="v2"
    )
    try:
        yield slots
    finally:
        slots.close()


async def python(code: str, slot: Slot, limits: EffectiveLimits = LIMITS) -> SandboxResult:
    with workspace(prefix="dcodex-test-") as cwd:
        (cwd / "main.py").write_text(textwrap.dedent(code))
        return await run_sandboxed(["python3", "main.py"], cwd=cwd, limits=limits, slot=slot)


def own_cgroup_line() -> str:
    return Path("/proc/self/cgroup").read_text().strip()


def slot_directory(slot: Slot) -> Path:
    assert isinstance(slot.cgroup, cgroups_v2.SlotCgroupV2), slot.cgroup
    return slot.cgroup.directory


async def test_strict_has_every_layer_from_cgroup_v2(pool: SlotPool) -> None:
    assert cgroup_version() == "v2"
    assert set(STRICT_LAYERS) <= set(pool.isolation.layers)
    assert set(CGROUP_LAYERS) <= set(pool.isolation.layers)
    async with pool.acquire() as slot:
        directory = slot_directory(slot)
    base = directory.parent
    assert base == cgroups_v2.delegated_cgroup()
    assert {"memory", "pids"} <= set((base / "cgroup.subtree_control").read_text().split())


async def test_the_kernel_kills_at_the_memory_limit_and_says_so(pool: SlotPool) -> None:
    # Two processes of 120 MiB: neither passes the address-space limit (192 MiB), the
    # tree passes the cgroup's memory.max and the kernel OOM-kills. CPU time to spare:
    # under emulation reclaiming at the limit is slow.
    limits = EffectiveLimits(
        **{**LIMITS.__dict__, "memory_bytes": 192 * 2**20, "cpu_time_s": 60, "wall_time_s": 90}
    )
    code = """
        import os, time
        os.fork()
        block = bytearray(120 * 2**20)
        time.sleep(2)
        print("survived")
        """
    async with pool.acquire() as slot:
        result = await python(code, slot, limits)
        events = (slot_directory(slot) / "memory.events").read_text()
    assert result.memory_limit_hit is True, (result, events)
    assert decide_status(result, limits) == "memory_limit"
    assert "oom_kill 0" not in events
    assert result.peak_memory_bytes >= 150 * 2**20, result.peak_memory_bytes


async def test_peak_memory_is_the_whole_tree_and_starts_afresh_each_run(pool: SlotPool) -> None:
    big = """
        import os, time
        block = bytearray(60 * 2**20)
        if os.fork() == 0:
            other = bytearray(60 * 2**20)
            time.sleep(0.5)
            os._exit(0)
        os.wait()
        """
    async with pool.acquire() as slot:
        first = await python(big, slot)
        second = await python("print('small')", slot)
    assert first.exit_code == 0, first.stderr
    assert first.peak_memory_bytes >= 120 * 2**20, first.peak_memory_bytes
    assert first.memory_limit_hit is False
    assert second.peak_memory_bytes < 60 * 2**20, "the peak of the run before was reset"


async def test_the_process_limit_is_per_run_and_reported(pool: SlotPool) -> None:
    async with pool.acquire() as slot:
        result = await python(FORK_UNTIL_REFUSED, slot)
    assert result.exit_code == 0, result.stderr
    assert 1 <= int(result.stdout) < LIMITS.processes
    assert result.process_limit_hit is True


async def test_cpu_time_counts_every_process_of_the_tree(pool: SlotPool) -> None:
    code = """
        import os, time
        def burn(seconds):
            end = time.process_time() + seconds
            while time.process_time() < end:
                pass
        for _ in range(2):
            if os.fork() == 0:
                burn(0.5)
                os._exit(0)  # never waited for: the namespace's reaper collects them
        time.sleep(4)
        """
    async with pool.acquire() as slot:
        result = await python(code, slot)
    assert result.exit_code == 0, result.stderr
    assert result.cpu_time_ms >= 1000, result.cpu_time_ms


async def test_a_cores_cap_bounds_the_whole_tree(pool: SlotPool) -> None:
    """Two busy processes for 3 s of wall time under a cap of a quarter of a core:
    together they get about 0.75 s of CPU, not 6 (or 3 on one core)."""
    code = """
        import os, time
        os.fork()
        end = time.monotonic() + 3
        while time.monotonic() < end:
            pass
        """
    async with pool.acquire() as slot:
        assert isinstance(slot.cgroup, cgroups_v2.SlotCgroupV2)
        slot.cgroup.limit_cores(0.25)
        try:
            result = await python(code, slot)
            cpu_max = (slot_directory(slot) / "cpu.max").read_text().split()
        finally:
            slot.cgroup.limit_cores(64)
    assert cpu_max == ["25000", "100000"]
    assert result.exit_code == 0, result.stderr
    seconds = result.cpu_time_ms / 1000
    assert seconds < 0.25 * result.wall_time_ms / 1000 + 0.5, (seconds, result.wall_time_ms)


@pytest.mark.skipif(SCENARIO != "container", reason="the guest's container scenario")
async def test_in_a_container_the_runner_takes_its_own_subtree(pool: SlotPool) -> None:
    """In its own cgroup namespace the service sees its cgroup as the root; the
    read-only mount is replaced by a writable one showing just that subtree, and the
    service's processes moved to a leaf so that the slots may have controllers."""
    assert cgroups_v2.delegated_cgroup() == Path("/sys/fs/cgroup")
    seen = {mount.mount_point: mount for mount in cgroup_mounts()}
    assert not seen[Path("/sys/fs/cgroup")].read_only
    own = own_cgroup_line()
    assert own == f"0::/{cgroups_v2.SERVICE_LEAF}", own
    async with pool.acquire() as slot:
        result = await python("print(open('/proc/self/cgroup').read())", slot)
    assert result.exit_code == 0, result.stderr
    # The run has a cgroup namespace of its own (docs/security.md): it sees its slot's
    # cgroup as the root and no host path.
    assert result.stdout.decode().strip() == "0::/", result.stdout


async def test_a_killed_services_slot_cgroups_are_removed_when_the_next_one_starts(
    pool: SlotPool,
) -> None:
    """A service killed -9 leaves its slots' cgroups behind; a starting one removes those
    of services that are gone and leaves those of a service still running."""
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    parent = cgroups_v2.delegated_cgroup()
    assert parent is not None
    orphan = parent / f"dcodex-runner-{gone.pid}-0"  # `slot_cgroup_name`'s, of a gone pid
    alive = parent / slot_cgroup_name("runner", 7)
    orphan.mkdir()
    alive.mkdir()
    try:
        removed = remove_leftovers()
        assert orphan in removed.cgroups and not orphan.exists()
        assert alive not in removed.cgroups and alive.exists()
    finally:
        for directory in (orphan, alive):
            if directory.exists():
                directory.rmdir()
