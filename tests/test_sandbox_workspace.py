"""Work directories: where a run's files are staged, and where they are not."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

import pytest

from dcodex.services.runner.execution import Program, execute
from dcodex.shared.languages.registry import Registry
from dcodex.shared.sandbox.isolation import RLIMITS_ONLY
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.slots import open_slot_pool
from dcodex.shared.sandbox.workspace import staging_root, workspace
from tests.test_sandbox_warm import LIMITS, MiB


def test_staged_directories_go_to_the_staging_root_and_the_rest_to_the_temp_dir() -> None:
    """Files a sandbox copies into its own tmpfs are staged on the memory-backed tmpfs
    (where there is one); everything else stays in the temporary directory."""
    temp = Path(tempfile.gettempdir())
    with workspace("dcodex-test-", staged=True) as staged, workspace("dcodex-test-") as kept:
        assert staged.parent == (staging_root() or temp)
        assert kept.parent == temp
        assert staged.stat().st_mode & 0o777 == 0o700 and kept.stat().st_mode & 0o777 == 0o700
    assert not staged.exists() and not kept.exists()


async def test_without_namespaces_a_program_writes_in_the_temp_dir_not_in_memory() -> None:
    """Without namespaces a run's directory is the program's own, where it writes what
    it likes: that must never be the memory-backed staging root."""
    python = Registry.load().resolve("python")
    code = "import os\nprint(os.getcwd())\nopen('left.txt', 'w').write('x')\n"
    result = await execute(
        Program(python, python.version, code),
        execution_id="workspace-test",
        stdin="",
        args=[],
        limits=LIMITS,
        slot=Slot(0, None, None, RLIMITS_ONLY),
    )
    assert result.status == "ok", result
    directory = Path(result.stdout.strip())
    assert directory.parent == Path(tempfile.gettempdir()), directory
    assert staging_root() is None or staging_root() not in directory.parents
    assert not await asyncio.to_thread(directory.exists), "the run's directory was not removed"


@pytest.mark.root
@pytest.mark.parametrize("extra_bytes", [0, 2 * MiB], ids=["small", "large"])
async def test_with_namespaces_small_runs_are_staged_in_memory_large_ones_not(
    extra_bytes: int,
) -> None:
    """A run with namespaces stages its files in memory only when they are small: a
    container's /dev/shm is often 64 MB for all its runs at once."""
    slots = await open_slot_pool(
        "strict", size=1, uid_base=62500, disk_bytes=64 * MiB, max_queued=None, service="staging"
    )
    python = Registry.load().resolve("python")
    files = [("data.bin", b"x" * extra_bytes)] if extra_bytes else []
    try:
        async with slots.acquire() as slot:
            running = asyncio.create_task(
                execute(
                    Program(python, python.version, "import time\ntime.sleep(1)\nprint('ok')\n"),
                    execution_id="staging-test",
                    stdin="",
                    args=[],
                    limits=LIMITS,
                    slot=slot,
                    files=files,
                )
            )
            places = await asyncio.to_thread(_run_directories_while, running)
            result = await running
    finally:
        slots.close()
    assert result.status == "ok" and result.stdout == "ok\n", result
    expected = staging_root() if not extra_bytes and staging_root() else Path(tempfile.gettempdir())
    assert places == {expected}, places


def _run_directories_while(running: asyncio.Task[object]) -> set[Path]:
    """Where this process's run directories are while `running` goes on."""
    mine = f"dcodex-run-{os.getpid()}-"
    staging = staging_root()
    roots = {Path(tempfile.gettempdir()), *([staging] if staging is not None else [])}
    seen: set[Path] = set()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline and not running.done():
        seen = {root for root in roots if any(p.name.startswith(mine) for p in root.iterdir())}
        time.sleep(0.02)
    return seen
