"""`dcodex bench sandbox`: the sandbox's cost, printed rather than asserted.

It runs one compiled hello-world binary many times each way — a
bare subprocess, a plain `bwrap` run with the same namespaces, and the DCodeX sandbox
with only rlimits, with namespaces and with every layer — and prints the
per-execution latency (p50, p99, mean) of each, from start to reaped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.cgroups import SlotCgroup, create_slot_cgroup, slot_cgroup_name
from dcodex.shared.sandbox.helper import prepare_sandbox
from dcodex.shared.sandbox.isolation import Isolation
from dcodex.shared.sandbox.run import run_sandboxed
from dcodex.shared.sandbox.slot import Slot

HELLO_C = '#include <stdio.h>\nint main(void) { puts("Hello, World!"); return 0; }\n'
Runner = Callable[[], Awaitable[None]]


@click.command()
@click.option("-n", "--runs", default=200, show_default=True, help="executions per method")
@click.option("--uid", default=61000, show_default=True, help="sandbox uid (when root)")
def sandbox(runs: int, uid: int) -> None:
    """Per-execution cost of the sandbox against a bare run and a plain bwrap run."""
    asyncio.run(_bench_sandbox(runs, uid))


async def _bench_sandbox(runs: int, uid: int) -> None:
    await prepare_sandbox()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="dcodex-bench-") as directory:
        workdir = Path(directory)
        binary = _compile_hello(workdir)
        cgroup = create_slot_cgroup(slot_cgroup_name("bench", 0)) if os.geteuid() == 0 else None
        try:
            await _measure(console, runs, _methods(workdir, binary, uid, cgroup))
        finally:
            if cgroup is not None:
                cgroup.remove()


async def _measure(console: Console, runs: int, methods: dict[str, Runner]) -> None:
    table = Table(title=f"one C hello-world execution, {runs} runs each (ms)")
    for column in ("method", "p50", "p99", "mean", "vs bwrap p50"):
        table.add_column(column, justify="left" if column == "method" else "right")
    results: dict[str, list[float]] = {}
    for name, run in methods.items():
        await run()  # warm up caches before measuring
        results[name] = [await _timed(run) for _ in range(runs)]
    bwrap_p50 = _percentile(results["bwrap"], 50) if "bwrap" in results else None
    for name, samples in results.items():
        p50 = _percentile(samples, 50)
        ratio = f"{p50 / bwrap_p50:.2f}x" if bwrap_p50 else "–"
        table.add_row(
            name,
            f"{p50:.2f}",
            f"{_percentile(samples, 99):.2f}",
            f"{statistics.fmean(samples):.2f}",
            ratio,
        )
    console.print(table)
    if "bwrap" not in results:
        console.print("bwrap is not installed: no plain bwrap figures")


def _methods(workdir: Path, binary: Path, uid: int, cgroup: SlotCgroup | None) -> dict[str, Runner]:
    root = os.geteuid() == 0
    sandbox_uid = uid if root else None
    # The services' default limits: a hello world is far inside them.
    sandbox_limits = EffectiveLimits(
        cpu_time_s=1.0,
        wall_time_s=2.0,
        memory_bytes=4 * 2**30,
        output_bytes=10 * 1024,
        processes=64,
        file_size_bytes=16 * 2**20,
    )
    namespaces = Isolation(slot_uids=root, namespaces=True, user_namespace=not root)

    def dcodex_run(isolation: Isolation, with_cgroup: bool) -> Runner:
        slot = Slot(0, sandbox_uid, sandbox_uid, isolation, cgroup if with_cgroup else None)

        async def run() -> None:
            result = await run_sandboxed(
                ["./" + binary.name], cwd=workdir, limits=sandbox_limits, slot=slot
            )
            assert result.stdout == b"Hello, World!\n", result

        return run

    methods: dict[str, Runner] = {"bare subprocess": _bare(binary, workdir)}
    bwrap = shutil.which("bwrap")
    if bwrap:
        methods["bwrap"] = _bwrap(bwrap, binary, workdir, sandbox_uid)
    methods["dcodex rlimits"] = dcodex_run(Isolation(slot_uids=root), False)
    methods["dcodex namespaces"] = dcodex_run(namespaces, False)
    if cgroup is not None:
        all_layers = Isolation(slot_uids=True, namespaces=True, cgroups=True)
        methods["dcodex all layers"] = dcodex_run(all_layers, True)
    return methods


def _bare(binary: Path, workdir: Path) -> Runner:
    async def run() -> None:
        process = await asyncio.create_subprocess_exec(
            str(binary), cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        await process.communicate()

    return run


def _bwrap(bwrap: str, binary: Path, workdir: Path, uid: int | None) -> Runner:
    argv = bwrap_argv(bwrap, binary, workdir, uid)
    env = clean_env(Path("/box"))

    async def run() -> None:
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await process.communicate()
        assert out == b"Hello, World!\n", err

    return run


def bwrap_argv(bwrap: str, binary: Path, workdir: Path, uid: int | None) -> list[str]:
    """bwrap running `binary` with the namespaces, view and writable places of the DCodeX
    sandbox (also the floor of `dcodex bench workloads`)."""
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
    for path in ("/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache"):
        if os.path.lexists(path):
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            else:
                argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(64 * 2**20), "--tmpfs", "/tmp"]
    argv += ["--bind", str(workdir), "/box", "--chdir", "/box", "--clearenv"]
    if uid is not None:
        argv += ["--uid", str(uid), "--gid", str(uid)]
    return [*argv, f"/box/{binary.name}"]


def _compile_hello(workdir: Path) -> Path:
    source = workdir / "hello.c"
    source.write_text(HELLO_C)
    binary = workdir / "hello"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    workdir.chmod(0o755)
    return binary


async def _timed(run: Runner) -> float:
    started = time.perf_counter()
    await run()
    return (time.perf_counter() - started) * 1000


def _percentile(samples: list[float], percent: int) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))
    return ordered[index]
