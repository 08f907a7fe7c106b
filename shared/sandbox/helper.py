"""The C helper that starts every sandboxed program (`sandbox_exec.c`): building it
on first use, and the options that tell it what to enforce.

The options reach the helper through a file descriptor (`config_fd`), never its
command line: the namespace's pid 1 is a fork of the helper, and a program reading
/proc/1/cmdline must learn nothing of the host (work directory, cgroup paths, uids).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dcodex.shared.sandbox.isolation import Isolation

if TYPE_CHECKING:
    from dcodex.shared.contract import EffectiveLimits
    from dcodex.shared.sandbox.slot_cgroups import SlotCgroupBackend

_HELPER_SOURCE = Path(__file__).with_name("sandbox_exec.c")


async def prepare_sandbox() -> str:
    """Build the helper now (off the event loop) rather than on the first run."""
    return await asyncio.to_thread(helper_binary)


@functools.cache
def helper_binary() -> str:
    """The compiled helper, built with the system's C compiler on first use.

    It lives in `$DCODEX_CACHE_DIR` (default `~/.cache/dcodex`) under a name that
    includes a hash of its source, so an upgrade builds a fresh one.
    """
    return _built("")


@functools.cache
def helper_library() -> str:
    """The same helper as a shared library, for the Python zygote (`zygote.py`), which
    calls its `dcodex_enter` in a forked interpreter instead of exec'ing the binary.
    Only its two entry points are visible: the helper's own `main` never binds to the
    interpreter's."""
    return _built(".so", ["-shared", "-fPIC", "-fvisibility=hidden"])


def _built(suffix: str, flags: Sequence[str] = ()) -> str:
    """The helper's source built with `flags`, cached under a hash of the source."""
    digest = hashlib.sha256(_HELPER_SOURCE.read_bytes()).hexdigest()[:16]
    directory = Path(os.environ.get("DCODEX_CACHE_DIR") or Path.home() / ".cache" / "dcodex")
    built = directory / f"dcodex-exec-{digest}{suffix}"
    if not built.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        _build_helper(built, flags)
    return str(built)


def _build_helper(binary: Path, flags: Sequence[str] = ()) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the sandbox helper needs a C compiler (cc or gcc) to be built")
    # Build beside the target, then rename: concurrent first runs never see half a file.
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
    subprocess.run(
        # libseccomp (Debian: libseccomp-dev) builds the system call filter.
        [compiler, "-O2", "-Wall", *flags, "-o", str(partial), str(_HELPER_SOURCE), "-lseccomp"],
        check=True,
        capture_output=True,
    )
    partial.chmod(0o755)
    partial.replace(binary)


_NOFILE = 64
_MAX_STACK_BYTES = 64 * 2**20
# The helper kills the run this long after its wall clock, should its supervisor not
# (a supervisor killed -9, or one too busy to act in time); normally the supervisor's
# own timer acts first and says why.
WALL_BACKSTOP_S = 2.0


# The helper's whole command line: what a program may see of it in /proc.
HELPER_NAME = "dcodex-exec"


def helper_command(config_fd: int) -> list[str]:
    """The helper's argv (run `helper_binary()` with it): its options come from the fd."""
    return [HELPER_NAME, "--config-fd", str(config_fd)]


def config_fd(options: Sequence[str]) -> int:
    """A file descriptor (an anonymous memory file, at offset 0) holding `options`."""
    fd = os.memfd_create("dcodex-exec-config", os.MFD_CLOEXEC)
    try:
        os.write(fd, b"\0".join(option.encode() for option in options))
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def helper_options(
    status_fd: int,
    program: Sequence[str],
    *,
    limits: EffectiveLimits,
    isolation: Isolation,
    workdir: Path,
    uid: int | None,
    gid: int | None,
    cgroup: SlotCgroupBackend | None,
    outputs: Sequence[str],
    sweep_uid: bool = True,
    address_space: int | None = None,
    wall_backstop: bool = True,
    deferred: bool = False,
) -> list[str]:
    """The helper's options for one run (see the usage in sandbox_exec.c);
    `address_space` replaces the memory limit as RLIMIT_AS (for runtimes such as the JVM).
    `wall_backstop`: the helper ends the run itself past its wall clock (plus a margin),
    counted from its start: not for a warm sandbox, which waits for its run first.
    `deferred`: the program's files and argv come later, on its stdin (`handover.py`);
    `program` is then empty."""
    cpu = max(1, math.ceil(limits.cpu_time_s))  # the verdict compares the exact CPU time
    argv = [
        "--status-fd", str(status_fd),
        # SIGXCPU at the soft limit, SIGKILL a second later if it is caught.
        "--cpu", str(_capped(resource.RLIMIT_CPU, cpu)), str(_capped(resource.RLIMIT_CPU, cpu + 1)),
        "--fsize", str(_capped(resource.RLIMIT_FSIZE, limits.file_size_bytes)),
        "--nofile", str(_capped(resource.RLIMIT_NOFILE, _NOFILE)),
        "--stack", str(_capped(resource.RLIMIT_STACK, min(limits.memory_bytes, _MAX_STACK_BYTES))),
    ]  # fmt: skip
    if wall_backstop:
        argv += ["--wall-ms", str(math.ceil((limits.wall_time_s + WALL_BACKSTOP_S) * 1000))]
    # The address space is bounded as well as the cgroup's resident memory: that is
    # what the memory limit has always meant, and it makes a runaway allocation fail at once.
    argv += ["--as", str(_capped(resource.RLIMIT_AS, address_space or limits.memory_bytes))]
    for path in cgroup.paths if cgroup is not None else []:
        argv += ["--cgroup", path]
    if uid is not None and gid is not None:
        argv += ["--uid", str(uid), "--gid", str(gid)]
    # RLIMIT_NPROC counts the processes of a uid (in a user namespace, of that namespace
    # alone), and root is exempt from it: it bounds one run when the run has a uid or a
    # user namespace of its own. A pids cgroup is exact, and takes its place.
    if cgroup is None and (uid is not None or isolation.user_namespace):
        argv += ["--nproc", str(limits.processes)]
    argv += [] if isolation.seccomp else ["--no-seccomp"]
    if uid is not None and sweep_uid and not isolation.namespaces:
        argv += ["--sweep-uid"]  # the processes of the uid are this run's
    if isolation.namespaces:
        argv += ["--namespaces", "--workdir", str(workdir), "--disk", str(isolation.disk_bytes)]
        argv += ["--userns"] if isolation.user_namespace else []
        for path in isolation.read_only_paths:
            argv += ["--ro", path]
        # Copied back within the file-size limit (together) and the wall clock.
        for name in outputs:
            argv += ["--output", name]
        argv += ["--output-bytes", str(limits.file_size_bytes)]
        argv += ["--deadline-ms", str(math.ceil(limits.wall_time_s * 1000))]
        argv += ["--deferred"] if deferred else []
    return [*argv, "--", *program]


def _capped(which: int, value: int) -> int:
    """`value`, but no higher than our own hard limit (which only root may raise)."""
    hard = resource.getrlimit(which)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)
