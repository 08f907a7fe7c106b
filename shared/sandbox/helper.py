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
import struct
import subprocess
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from dcodex.shared.sandbox.isolation import Isolation

if TYPE_CHECKING:
    from dcodex.shared.contract import EffectiveLimits
    from dcodex.shared.sandbox.slot_cgroups import SlotCgroupBackend

_HELPER_SOURCE = Path(__file__).with_name("sandbox_exec.c")
_MUSL_GCC = "musl-gcc"
log = structlog.get_logger("dcodex.sandbox")


async def prepare_sandbox() -> str:
    """Build the helper now (off the event loop) rather than on the first run."""
    return await asyncio.to_thread(helper_binary)


@functools.cache
def helper_binary() -> str:
    """The helper every sandbox starts with, built on first use: statically against
    musl where `musl-gcc` is installed (Debian: musl-tools) or that build is there
    already, else with the system's C compiler and glibc.

    Why static and musl: glibc's start-up asks the CPU for its cache sizes, dozens of
    CPUID instructions, each a trap to the hypervisor on a virtual machine. On the
    2-core VM of docs/performance.md a glibc program that only returns costs 0.6-0.7 ms
    of CPU per exec, the musl one 0.07 ms; the helper is exec'd for every run.

    Built binaries live in `$DCODEX_CACHE_DIR` (default `~/.cache/dcodex`) under a name
    that includes a hash of the source, so an upgrade builds fresh ones.
    """
    # A static build already there serves without musl-gcc: the container image builds
    # the helper and leaves the build tools out.
    if _path("-static").is_file() or shutil.which(_MUSL_GCC):
        try:
            return static_helper()
        except (OSError, subprocess.CalledProcessError) as exc:
            log.warning("static_helper_build_failed", error=_build_error(exc))
    return dynamic_helper()


def static_helper() -> str:
    """The helper linked statically against musl, its system call filter compiled in
    (the BPF the libseccomp build exports: the very filter, with no libseccomp to link)."""
    return _built("-static", _build_static)


def dynamic_helper() -> str:
    """The helper linked against the system's C library and libseccomp."""
    return _built("", lambda output: _compile(_c_compiler(), [], output))


@functools.cache
def helper_library() -> str:
    """The same helper as a shared library, for the Python zygote (`zygote.py`), which
    calls its `dcodex_start` to clone each run's reaper instead of exec'ing the binary.
    Only its entry points are visible: the helper's own `main` never binds to the
    interpreter's."""
    flags = ["-shared", "-fPIC", "-fvisibility=hidden"]
    return _built(".so", lambda output: _compile(_c_compiler(), flags, output))


def _built(suffix: str, build: Callable[[Path], None]) -> str:
    """The helper's source built by `build`, unless built already."""
    built = _path(suffix)
    if not built.is_file():
        built.parent.mkdir(parents=True, exist_ok=True)
        # Built beside the target, then renamed: concurrent first runs never see half a file.
        partial = built.with_name(f"{built.name}.{os.getpid()}.partial")
        build(partial)
        partial.chmod(0o755)
        partial.replace(built)
    return str(built)


def _path(suffix: str) -> Path:
    """Where the build with `suffix` is cached: under a hash of the source."""
    directory = Path(os.environ.get("DCODEX_CACHE_DIR") or Path.home() / ".cache" / "dcodex")
    return directory / f"dcodex-exec-{_source_digest()}{suffix}"


@functools.cache
def _source_digest() -> str:
    """The source's hash, read once: a start-up asks for each build's path."""
    return hashlib.sha256(_HELPER_SOURCE.read_bytes()).hexdigest()[:16]


def _c_compiler() -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the sandbox helper needs a C compiler (cc or gcc) to be built")
    return compiler


def _compile(
    compiler: str, flags: Sequence[str], output: Path, libraries: Sequence[str] = ("-lseccomp",)
) -> None:
    """Build the helper; libseccomp (Debian: libseccomp-dev) builds its system call filter."""
    command = [compiler, "-O2", "-Wall", *flags, "-o", str(output), str(_HELPER_SOURCE)]
    subprocess.run([*command, *libraries], check=True, capture_output=True)


def _build_static(output: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="dcodex-helper-build-") as scratch:
        header = Path(scratch) / "seccomp_bpf.h"
        header.write_text(filter_header(exported_filter(helper_library())))
        flags = ["-static", "-isystem", str(_kernel_headers(Path(scratch) / "include"))]
        _compile(_MUSL_GCC, [*flags, "-include", str(header)], output, libraries=())


def exported_filter(library: str) -> bytes:
    """The system call filter as BPF, from the libseccomp build (`dcodex_export_filter`)."""
    import ctypes  # only to build the helper: a service that finds it built never loads ctypes

    export = ctypes.CDLL(library).dcodex_export_filter
    export.argtypes = [ctypes.c_int]
    memory = os.memfd_create("dcodex-seccomp-bpf")
    try:
        failed = export(memory)
        if failed != 0:
            raise OSError(-failed, "libseccomp could not export the filter")
        return os.pread(memory, os.fstat(memory).st_size, 0)
    finally:
        os.close(memory)


def filter_header(bpf: bytes) -> str:
    """`bpf` (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k) as the initialiser the
    static build compiles in."""
    if not bpf or len(bpf) % 8:
        raise ValueError(f"not a BPF program: {len(bpf)} bytes")
    instructions = [struct.unpack_from("=HBBI", bpf, at) for at in range(0, len(bpf), 8)]
    initialiser = ",".join(f"{{{code:#x},{jt},{jf},{k:#x}}}" for code, jt, jf, k in instructions)
    return f"#define DCODEX_SECCOMP_BPF {initialiser}\n"


def _kernel_headers(include: Path) -> Path:
    """musl brings no kernel headers: the system's (linux, asm, asm-generic), alone in
    a directory of their own, so none of glibc's headers mixes with musl's."""
    system = Path("/usr/include")
    arch_asm = system / (sysconfig.get_config_var("MULTIARCH") or "") / "asm"
    links = {
        "linux": system / "linux",
        "asm-generic": system / "asm-generic",
        "asm": arch_asm if arch_asm.is_dir() else system / "asm",
    }
    include.mkdir()
    for name, target in links.items():
        (include / name).symlink_to(target)
    return include


def _build_error(exc: Exception) -> str:
    stderr = getattr(exc, "stderr", None)
    return stderr.decode(errors="replace")[-2000:] if isinstance(stderr, bytes) else repr(exc)


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
