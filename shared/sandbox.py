"""Run one untrusted program under resource limits (the rlimits layer of the sandbox).

`run_sandboxed` starts the program in a session and process group of its own, with a
clean environment, rlimits and optionally a uid of its own, then supervises it on the
running event loop without threads:

- stdout/stderr are read through `loop.add_reader` and capped together;
- the program is started by a tiny C helper (`sandbox_exec.c`, built on first use),
  which puts it in a process group of its own, applies the rlimits and uid, kills the
  rest of the group when the program exits and reports its status, CPU time and peak
  memory (from `wait4`) on a pipe that is read on the loop;
- a timer kills the group when the wall-clock limit passes.

What this layer cannot do: a program that calls setsid() escapes the process-group
kill, and memory is limited as address space (RLIMIT_AS), not as resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import math
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KillReason = Literal["output", "wall_time", "cpu_time"]
Stream = Literal["stdout", "stderr"]
OutputCallback = Callable[[Stream, bytes], None]

_NOFILE = 64
_MAX_STACK_BYTES = 64 * 2**20
_READ_CHUNK = 64 * 1024
# How long to wait for the pipes to reach EOF once the program has exited. Only a
# process outside the killed group (a setsid daemon) can hold them open longer.
_DRAIN_GRACE_S = 0.1
# How often a fractional CPU limit is checked, and the kernel's unit of CPU time.
_CPU_POLL_S = 0.02
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class SandboxLimits:
    cpu_time_s: float  # CPU seconds (user+sys) of the program
    wall_time_s: float  # wall-clock seconds
    memory_bytes: int  # address space (RLIMIT_AS)
    output_bytes: int  # stdout+stderr combined cap
    processes: int  # RLIMIT_NPROC (only meaningful with a uid of its own)
    file_size_bytes: int  # RLIMIT_FSIZE


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # None when killed by a signal
    signal: int | None  # the terminating signal number, if any
    stdout: bytes
    stderr: bytes
    output_truncated: bool  # the output cap was hit (program was stopped)
    wall_clock_timeout: bool  # the wall-clock timer fired
    killed_for: KillReason | None  # the FIRST reason the supervisor killed the program
    cpu_time_ms: float  # ru_utime + ru_stime from wait4, in ms
    wall_time_ms: float
    # ru_maxrss * 1024 from wait4, taken by the C helper: forked from it rather than
    # from Python, the program's figure does not include our interpreter's memory.
    peak_memory_bytes: int


def clean_env(home: Path) -> dict[str, str]:
    """A minimal environment; nothing is inherited from the host."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


async def run_sandboxed(
    argv: Sequence[str],
    *,
    cwd: Path,
    limits: SandboxLimits,
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    uid: int | None = None,
    gid: int | None = None,
    on_output: OutputCallback | None = None,
) -> SandboxResult:
    """Run `argv` to completion under `limits` and report how it ended.

    Raises OSError (or subprocess.SubprocessError) when the program cannot be started.
    `on_output` is called on the event loop with each chunk of output that is kept;
    it must be quick and must not raise (the loop would only log the exception).
    On cancellation the process group is killed and reaped before re-raising.
    """
    loop = asyncio.get_running_loop()
    spawned = _spawn(argv, cwd, env if env is not None else clean_env(cwd), limits, uid, gid)
    supervisor = _Supervisor(loop, spawned, stdin, limits, on_output)
    try:
        return await supervisor.run()
    finally:
        supervisor.close()


# --- starting the program -------------------------------------------------------------


@dataclass(frozen=True)
class _Spawned:
    proc: subprocess.Popen[bytes]  # the helper; the program is its only child
    status_fd: int  # the helper's reports: "pid N", then "exit ..." or "error ..."
    stdin_fd: int  # our (write) end of the program's stdin
    stdout_fd: int  # our (read) end of its stdout
    stderr_fd: int


def _spawn(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    limits: SandboxLimits,
    uid: int | None,
    gid: int | None,
) -> _Spawned:
    # Own pipes rather than Popen's file objects: we want raw, non-blocking fds.
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    status_r, status_w = os.pipe()
    ours = (status_r, stdin_w, stdout_r, stderr_r)
    try:
        proc = subprocess.Popen(
            [
                helper_binary(),
                str(status_w),
                *_helper_limits(limits, uid, gid),
                "--",
                _executable(argv[0], env),
                *argv[1:],
            ],
            stdin=stdin_r,
            stdout=stdout_w,
            stderr=stderr_w,
            cwd=cwd,
            env=dict(env),
            close_fds=True,
            pass_fds=(status_w,),
            start_new_session=True,  # the helper leads a session; the program a group
        )
    except BaseException:
        _close_fds(ours)
        raise
    finally:
        _close_fds((stdin_r, stdout_w, stderr_w, status_w))
    for fd in ours:
        os.set_blocking(fd, False)
    return _Spawned(proc, status_r, stdin_w, stdout_r, stderr_r)


def _executable(name: str, env: Mapping[str, str]) -> str:
    """`name` as a path: looked up on the program's PATH unless it names a path already."""
    if "/" in name:
        return name
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"{name} is not on the sandbox's PATH", name)
    return found


def _helper_limits(limits: SandboxLimits, uid: int | None, gid: int | None) -> list[str]:
    """The helper's numeric arguments, in its order (see sandbox_exec.c)."""
    cpu = max(1, math.ceil(limits.cpu_time_s))  # the verdict compares the exact CPU time
    values = [
        # SIGXCPU at the soft limit, SIGKILL a second later if it is caught.
        _capped(resource.RLIMIT_CPU, cpu),
        _capped(resource.RLIMIT_CPU, cpu + 1),
        _capped(resource.RLIMIT_AS, limits.memory_bytes),
        _capped(resource.RLIMIT_FSIZE, limits.file_size_bytes),
        _capped(resource.RLIMIT_NOFILE, _NOFILE),
        _capped(resource.RLIMIT_STACK, min(limits.memory_bytes, _MAX_STACK_BYTES)),
        # RLIMIT_NPROC counts every process of the uid, and root is exempt from it: it
        # bounds one run only when the run has a uid of its own.
        -1 if uid is None else limits.processes,
        -1 if uid is None else uid,
        -1 if gid is None else gid,
    ]
    return [str(value) for value in values]


def _capped(which: int, value: int) -> int:
    """`value`, but no higher than our own hard limit (which only root may raise)."""
    hard = resource.getrlimit(which)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# --- supervising it -------------------------------------------------------------------


@dataclass(frozen=True)
class _Exit:
    """The helper's "exit" report."""

    status: int
    cpu_time_ms: float
    peak_memory_bytes: int
    at: float  # monotonic time the report arrived


class _Supervisor:
    """The state of one run; every callback runs on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        spawned: _Spawned,
        stdin: bytes,
        limits: SandboxLimits,
        on_output: OutputCallback | None,
    ) -> None:
        self._loop = loop
        self._helper = spawned.proc
        self._started = time.monotonic()
        self._limits = limits
        self._on_output = on_output
        self._status_fd: int | None = spawned.status_fd
        self._status_text = b""
        self._pgid: int | None = None  # the program's pid and process group, once started
        self._stdin_fd: int | None = spawned.stdin_fd
        self._pending_stdin = memoryview(stdin)
        self._streams: dict[int, Stream] = {
            spawned.stdout_fd: "stdout",
            spawned.stderr_fd: "stderr",
        }
        self._output: dict[Stream, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._output_total = 0
        self._exited: asyncio.Future[_Exit] = loop.create_future()
        self._eof: asyncio.Future[None] = loop.create_future()
        self._wall_timer: asyncio.TimerHandle | None = None
        self._cpu_timer: asyncio.TimerHandle | None = None
        self._ended = False  # the program has been reaped: its pgid is no longer ours
        self._truncated = False
        self._wall_clock_timeout = False
        self._killed_for: KillReason | None = None

    def _watch(self) -> None:
        assert self._status_fd is not None
        self._loop.add_reader(self._status_fd, self._on_status)
        for fd in self._streams:
            self._loop.add_reader(fd, self._on_readable, fd)
        if self._pending_stdin and self._stdin_fd is not None:
            self._loop.add_writer(self._stdin_fd, self._on_writable)
        else:
            self._close_stdin()  # EOF right away
        self._wall_timer = self._loop.call_later(self._limits.wall_time_s, self._on_wall_time)
        if self._limits.cpu_time_s != math.ceil(self._limits.cpu_time_s):
            # RLIMIT_CPU counts whole seconds: a fractional limit is watched from here.
            self._cpu_timer = self._loop.call_later(_CPU_POLL_S, self._on_cpu_poll)

    async def run(self) -> SandboxResult:
        self._watch()
        exited = await self._exited
        self._reap_helper()
        if self._streams:
            await asyncio.wait({self._eof}, timeout=_DRAIN_GRACE_S)
        return self._result(exited, (exited.at - self._started) * 1000)

    def close(self) -> None:
        """Release everything; if the program still runs (cancellation), kill it and wait."""
        self._cancel_timers()
        if not self._ended:  # cancelled: note that cancelling also marks `_exited` done
            self._finish_blocking()
        self._close_status()
        self._reap_helper()
        for fd in list(self._streams):
            self._close_stream(fd)
        self._close_stdin()

    def _finish_blocking(self) -> None:
        """Kill the program and read the helper's reports to the end (quick once killed)."""
        self._kill_group()
        if self._status_fd is None:
            return
        self._loop.remove_reader(self._status_fd)
        os.set_blocking(self._status_fd, True)
        while not self._ended:
            self._kill_group()
            chunk = os.read(self._status_fd, 4096)
            if not chunk:
                break
            self._take_status(chunk)

    # event callbacks

    def _on_status(self) -> None:
        assert self._status_fd is not None
        try:
            chunk = os.read(self._status_fd, 4096)
        except BlockingIOError:
            return
        if not chunk:
            self._close_status()
            if not self._exited.done():
                self._exited.set_exception(OSError("the sandbox helper ended without a report"))
            return
        self._take_status(chunk)

    def _take_status(self, chunk: bytes) -> None:
        self._status_text += chunk
        *lines, self._status_text = self._status_text.split(b"\n")
        for line in lines:
            kind, *values = line.decode().split()
            if kind == "pid":
                self._pgid = int(values[0])
                if self._killed_for is not None:
                    self._kill_group()  # a kill was asked for before the program started
            elif kind == "exit":
                self._on_exit(*(int(value) for value in values))
            elif kind == "error" and not self._exited.done():
                error = int(values[0])
                self._ended = True
                self._exited.set_exception(OSError(error, os.strerror(error)))

    def _on_exit(self, status: int, utime_us: int, stime_us: int, maxrss_kb: int) -> None:
        self._ended = True
        self._cancel_timers()
        report = _Exit(status, (utime_us + stime_us) / 1000, maxrss_kb * 1024, time.monotonic())
        if not self._exited.done():
            self._exited.set_result(report)

    def _on_cpu_poll(self) -> None:
        if self._ended or self._pgid is None:
            self._cpu_timer = self._loop.call_later(_CPU_POLL_S, self._on_cpu_poll)
            return
        if _cpu_seconds(self._pgid) >= self._limits.cpu_time_s:
            self._kill_group("cpu_time")
        else:
            self._cpu_timer = self._loop.call_later(_CPU_POLL_S, self._on_cpu_poll)

    def _on_wall_time(self) -> None:
        self._wall_clock_timeout = True
        self._kill_group("wall_time")

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._keep(self._streams[fd], data)
        else:
            self._close_stream(fd)

    def _on_writable(self) -> None:
        assert self._stdin_fd is not None
        try:
            written = os.write(self._stdin_fd, self._pending_stdin)
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the program does not read its stdin (any more)
            written = len(self._pending_stdin)
        self._pending_stdin = self._pending_stdin[written:]
        if not self._pending_stdin:
            self._close_stdin()

    # helpers

    def _keep(self, stream: Stream, data: bytes) -> None:
        """Store output in arrival order up to the combined cap; past it, stop the program."""
        room = self._limits.output_bytes - self._output_total
        kept = data[: max(room, 0)]
        self._output[stream] += kept
        self._output_total += len(kept)
        if len(data) > len(kept):
            self._truncated = True
            self._kill_group("output")
        if kept and self._on_output is not None:
            self._on_output(stream, kept)  # last: should it raise, our state is consistent

    def _cancel_timers(self) -> None:
        for timer in (self._wall_timer, self._cpu_timer):
            if timer is not None:
                timer.cancel()

    def _kill_group(self, reason: KillReason | None = None) -> None:
        if reason is not None and self._killed_for is None:
            self._killed_for = reason
        if self._ended or self._pgid is None:
            return  # not started yet, or reaped: the pgid may belong to someone else
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._pgid, signal.SIGKILL)

    def _reap_helper(self) -> None:
        # The helper exits right after its last report, so this wait is short.
        if self._helper.returncode is None:
            self._helper.wait()

    def _close_status(self) -> None:
        if self._status_fd is not None:
            self._loop.remove_reader(self._status_fd)
            _close_fds([self._status_fd])
            self._status_fd = None

    def _close_stream(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self._streams.pop(fd, None)
        _close_fds([fd])
        if not self._streams and not self._eof.done():
            self._eof.set_result(None)

    def _close_stdin(self) -> None:
        if self._stdin_fd is not None:
            self._loop.remove_writer(self._stdin_fd)
            _close_fds([self._stdin_fd])
            self._stdin_fd = None

    def _result(self, exited: _Exit, wall_time_ms: float) -> SandboxResult:
        signaled = os.WIFSIGNALED(exited.status)
        return SandboxResult(
            exit_code=None if signaled else os.WEXITSTATUS(exited.status),
            signal=os.WTERMSIG(exited.status) if signaled else None,
            stdout=bytes(self._output["stdout"]),
            stderr=bytes(self._output["stderr"]),
            output_truncated=self._truncated,
            wall_clock_timeout=self._wall_clock_timeout,
            killed_for=self._killed_for,
            cpu_time_ms=exited.cpu_time_ms,
            wall_time_ms=wall_time_ms,
            peak_memory_bytes=exited.peak_memory_bytes,
        )


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its reaped children, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the ")" field 3 (state) is at index 0: utime..cstime are fields 14-17.
    return sum(int(value) for value in fields[11:15]) / _CLOCK_TICKS


# --- the C helper ---------------------------------------------------------------------

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
    source = _HELPER_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    directory = Path(os.environ.get("DCODEX_CACHE_DIR") or Path.home() / ".cache" / "dcodex")
    binary = directory / f"dcodex-exec-{digest}"
    if not binary.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        _build_helper(binary)
    return str(binary)


def _build_helper(binary: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the sandbox helper needs a C compiler (cc or gcc) to be built")
    # Build beside the target, then rename: concurrent first runs never see half a file.
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
    subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(partial), str(_HELPER_SOURCE)],
        check=True,
        capture_output=True,
    )
    partial.chmod(0o755)
    partial.replace(binary)
