"""Run one untrusted program in a sandbox and report how it ended.

`run_sandboxed` starts the program through a tiny C helper (`sandbox_exec.c`, see
`helper.py`) with a clean environment, rlimits, `no_new_privs`, optionally a uid
of its own, a cgroup of its own and (with `Isolation.namespaces`) private pid, mount,
network, IPC and UTS namespaces whose root is a size-capped tmpfs holding only the
program's files and a read-only view of the toolchain. It supervises the run on the
running event loop without threads:

- stdout/stderr are read through `loop.add_reader` and capped together;
- the helper reports the program's start, then its status, CPU time and peak memory
  on a pipe that is read on the loop; with a cgroup the kernel's counters for the
  whole process tree replace the latter two;
- a timer stops everything when the wall-clock limit passes: the program's process
  group, or with namespaces the namespace's pid 1, which kills every process in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import structlog

from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.cgroups import CgroupUsage
from dcodex.shared.sandbox.helper import config_fd, helper_binary, helper_command, helper_options
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR, Isolation
from dcodex.shared.sandbox.pidfds import pidfd_of_child, send
from dcodex.shared.sandbox.proc_stat import cpu_seconds_with_children
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.slot_cgroups import SlotCgroupBackend
from dcodex.shared.sandbox.zygote import ZygoteChild, ZygoteKeeper, ZygoteUnavailable

log = structlog.get_logger("dcodex.sandbox")

KillReason = Literal["output", "wall_time", "cpu_time"]
Stream = Literal["stdout", "stderr"]
OutputCallback = Callable[[Stream, bytes], None]

_READ_CHUNK = 64 * 1024
# How long to wait for the pipes to reach EOF once the program has exited. Only a
# process outside the killed group (a setsid daemon) can hold them open longer.
_DRAIN_GRACE_S = 0.1
# How often a fractional CPU limit is checked, and the kernel's unit of CPU time.
_CPU_POLL_S = 0.02
# How long the processes of a run, once killed, may take to leave its cgroup.
_EMPTY_TIMEOUT_S = 10.0


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
    # With a cgroup: the peak of the whole process tree. Without: ru_maxrss of the
    # largest process, from the C helper (forked from it rather than from Python, the
    # figure does not include our interpreter's memory).
    peak_memory_bytes: int
    # Known only with a cgroup (None without): the kernel OOM-killed a process of the
    # run at the memory limit / refused a fork at the process limit.
    memory_limit_hit: bool | None = None
    process_limit_hit: bool | None = None
    # Expected outputs the helper did not copy back, and why ("too-large", "hard-linked",
    # "not-a-regular-file", "deadline"...).
    skipped_outputs: Mapping[str, str] = field(default_factory=dict)
    # Forked from a pre-initialised interpreter (`zygote.py`) rather than exec'd.
    zygote: bool = False


def working_directory(slot: Slot | None, cwd: Path) -> Path:
    """Where the program finds its files and runs: `cwd`, or /box in namespaces."""
    if slot is not None and slot.isolation.namespaces:
        return Path(SANDBOX_WORKDIR)
    return cwd


async def run_sandboxed(
    argv: Sequence[str],
    *,
    cwd: Path,
    limits: EffectiveLimits,
    stdin: bytes | LiveInput = b"",
    env: Mapping[str, str] | None = None,
    slot: Slot | None = None,
    on_output: OutputCallback | None = None,
    read_only: Sequence[str] = (),
    outputs: Sequence[str] = (),
    address_space: int | None = None,
    zygote: ZygoteKeeper | None = None,
) -> SandboxResult:
    """Run `argv` to completion under `limits` and report how it ended.

    `stdin` is all the input at once, or a `LiveInput` fed while the program runs
    (an interactive run). `slot` says which uid, isolation and cgroup the run gets
    (none: the service's own user, rlimits only). `cwd` holds the program's files;
    with namespaces they are copied into the sandbox's own /box (`SANDBOX_WORKDIR`),
    and the `outputs` named (regular single-link files, within the file-size limit
    together and the wall clock) are copied back to `cwd` at the end;
    `read_only` host paths are shown read-only besides the usual view. `argv` paths
    are relative to that directory. `address_space` is the RLIMIT_AS when it is not
    `limits.memory_bytes` (which then bounds only resident memory, in the cgroup).
    Raises OSError (or subprocess.SubprocessError) when the program cannot be started.
    `on_output` is called on the event loop with each chunk of output that is kept;
    it must be quick and must not raise (the loop would only log the exception).
    On cancellation everything the program started is killed and reaped first.
    With `zygote`, a run it serves (in namespaces) is forked from a ready zygote of it
    rather than exec'd; with none ready, or should it fail to fork, it runs cold.
    """
    started = start_sandboxed(
        argv,
        cwd=cwd,
        limits=limits,
        env=env,
        slot=slot,
        read_only=read_only,
        outputs=outputs,
        address_space=address_space,
        zygote=zygote,
    )
    return await started.finish(stdin, on_output)


def start_sandboxed(
    argv: Sequence[str],
    *,
    cwd: Path,
    limits: EffectiveLimits,
    env: Mapping[str, str] | None = None,
    slot: Slot | None = None,
    read_only: Sequence[str] = (),
    outputs: Sequence[str] = (),
    address_space: int | None = None,
    wall_backstop: bool = True,
    deferred: bool = False,
    zygote: ZygoteKeeper | None = None,
) -> StartedSandbox:
    """Start `argv` as `run_sandboxed` does, without supervising it yet: its stdin,
    output and wall-clock limit begin with `StartedSandbox.finish` (see `warm.py`).
    `deferred` (namespaces only): everything is set up but the program, whose files and
    argv (`argv` is then empty) come first on its stdin (`handover.py`).
    Call from the event loop that will supervise it."""
    loop = asyncio.get_running_loop()
    slot = slot or Slot(index=0, uid=None, gid=None)
    isolation, cgroup = slot.isolation, slot.cgroup
    if read_only:
        isolation = replace(isolation, read_only_paths=(*isolation.read_only_paths, *read_only))
    if env is None:
        env = clean_env(working_directory(slot, cwd))
    if cgroup is not None:
        cgroup.prepare(limits.memory_bytes, limits.processes)
    if deferred and not isolation.namespaces:
        raise ValueError("a deferred sandbox needs namespaces")
    program = program_argv(argv, env) if argv else []

    def options(status_fd: int) -> list[str]:
        return helper_options(
            status_fd,
            program,
            limits=limits,
            isolation=isolation,
            workdir=cwd,
            uid=slot.uid,
            gid=slot.gid,
            cgroup=cgroup,
            outputs=outputs,
            sweep_uid=not slot.shared_uid,
            address_space=address_space,
            wall_backstop=wall_backstop,
            deferred=deferred,
        )

    spawned = None
    if zygote is not None and isolation.namespaces and zygote.serves(program, env):
        spawned = _spawn_in_zygote(zygote, options, isolation.user_namespace)
    if spawned is None:
        spawned = _spawn(options, cwd, env)
    return StartedSandbox(_Supervisor(loop, spawned, limits, isolation, cgroup), cgroup)


class StartedSandbox:
    """A started sandboxed program, supervised from `finish` on (once)."""

    def __init__(self, supervisor: _Supervisor, cgroup: SlotCgroupBackend | None) -> None:
        self._supervisor = supervisor
        self._cgroup = cgroup

    @property
    def alive(self) -> bool:
        """The sandbox has not ended (a program that waits for its input has not)."""
        return self._supervisor.helper_alive

    async def finish(
        self, stdin: bytes | LiveInput = b"", on_output: OutputCallback | None = None
    ) -> SandboxResult:
        """Give the program its input, enforce the limits, and report how it ended;
        returns once the run's cgroup is empty, so its slot is clean for the next run."""
        try:
            return await self.outcome(stdin, on_output)
        finally:
            await self.settle()

    async def outcome(
        self, stdin: bytes | LiveInput = b"", on_output: OutputCallback | None = None
    ) -> SandboxResult:
        """`finish` without the clean-up: how the run ended, as soon as the program has.
        `settle` must follow before the slot is used again (a warm sandbox's pool does
        that after the run's reply has gone out)."""
        return await self._supervisor.run(stdin, on_output)

    async def settle(self) -> None:
        """Release everything (killing the program if it still runs) and return once the
        run's cgroup is empty."""
        self._supervisor.close()
        if self._cgroup is not None:
            await _emptied(self._cgroup)

    def close(self) -> None:
        """End the program unused: kill it and reap everything."""
        self._supervisor.close()


async def _emptied(cgroup: SlotCgroupBackend) -> None:
    """Return once no process of the run is left in its cgroup: the slot is not used
    again before. (The reaper kills them all, but a pid namespace whose pid 1 died takes
    a moment to go; nothing should, but an OOM-killed reaper would.)"""
    deadline = time.monotonic() + _EMPTY_TIMEOUT_S
    pause = _CPU_POLL_S / 40
    while cgroup.kill_all():
        if time.monotonic() > deadline:
            raise OSError(errno.EBUSY, "the run's processes would not end; slot left unclean")
        # Usually the reaper is just unmapping its memory (longer for a zygote's fork,
        # whose memory is an interpreter's): look again soon, then less often.
        await asyncio.sleep(pause)
        pause = min(pause * 2, _CPU_POLL_S / 4)


class LiveInput:
    """Standard input given while the program runs, and signals for it.

    Calls made before the run starts are kept and replayed once it has; calls after
    it has ended do nothing.
    """

    def __init__(self) -> None:
        self._target: _Supervisor | None = None
        self._early: list[tuple[str, bytes | int]] = []

    def write(self, data: bytes) -> None:
        self._do("write", data)

    def close(self) -> None:
        self._do("close", b"")

    def signal(self, signum: int) -> None:
        self._do("signal", signum)

    def attach(self, target: _Supervisor) -> None:
        self._target = target
        for action, value in self._early:
            self._do(action, value)
        self._early.clear()

    def _do(self, action: str, value: bytes | int) -> None:
        target = self._target
        if target is None:
            self._early.append((action, value))
        elif action == "write" and isinstance(value, bytes):
            target.feed(value)
        elif action == "close":
            target.end_input()
        elif action == "signal" and isinstance(value, int):
            target.send_signal(value)


# --- starting the program -------------------------------------------------------------


class _Helper(Protocol):
    """The helper as the supervisor waits for it: a `Popen`, or a `ZygoteChild`."""

    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...


@dataclass(frozen=True)
class _Spawned:
    proc: _Helper  # the helper; the program is its only child
    status_fd: int  # the helper's reports: "pid N", then "exit ..." or "error ..."
    stdin_fd: int  # our (write) end of the program's stdin
    stdout_fd: int  # our (read) end of its stdout
    stderr_fd: int
    zygote: bool = False  # forked by a zygote (`_spawn_in_zygote`)


def _spawn(options: Callable[[int], list[str]], cwd: Path, env: Mapping[str, str]) -> _Spawned:
    """Start the helper (`options` of its status fd) with pipes for every stream."""

    def start(fds: _ChildFds) -> _Helper:
        return subprocess.Popen(
            helper_command(fds.config),
            executable=helper_binary(),
            stdin=fds.stdin,
            stdout=fds.stdout,
            stderr=fds.stderr,
            cwd=cwd,
            env=dict(env),
            close_fds=True,
            pass_fds=(fds.status, fds.config),
            start_new_session=True,  # the helper leads a session; the program a group
        )

    return _piped(lambda fds: options(fds.status), start)


def program_argv(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`argv` as the helper execs it: its program looked up as `_executable` does."""
    return [_executable(argv[0], env), *argv[1:]]


def _spawn_in_zygote(
    keeper: ZygoteKeeper, options: Callable[[int], list[str]], user_namespace: bool
) -> _Spawned | None:
    """`_spawn`, by a ready zygote (None: none is, or it failed to start the run).
    Its reaper finds the streams on 0-2, the status on 3 and the options on 4."""
    zygote = keeper.zygote()
    if zygote is None:
        return None

    def start(fds: _ChildFds) -> _Helper:
        run_fds = (fds.stdin, fds.stdout, fds.stderr, fds.status, fds.config)
        return zygote.spawn(run_fds, user_namespace)

    try:
        spawned = _piped(lambda _fds: options(3), start)
    except ZygoteUnavailable as exc:
        log.warning("zygote_unavailable", error=str(exc))
        return None
    return dataclasses.replace(spawned, zygote=True)


@dataclass(frozen=True)
class _ChildFds:
    """The child's ends of its pipes, and the options' memfd (`config`)."""

    stdin: int
    stdout: int
    stderr: int
    status: int
    config: int = -1


def _piped(
    options: Callable[[_ChildFds], list[str]], start: Callable[[_ChildFds], _Helper]
) -> _Spawned:
    """`start(...)` the helper with a pipe for every stream and for its status, and its
    `options(...)` in a memfd; the child's ends are closed here once it has them."""
    # Own pipes rather than Popen's file objects: we want raw, non-blocking fds.
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    status_r, status_w = os.pipe()
    ours = (status_r, stdin_w, stdout_r, stderr_r)
    fds = _ChildFds(stdin_r, stdout_w, stderr_w, status_w)
    try:
        fds = dataclasses.replace(fds, config=config_fd(options(fds)))
        proc = start(fds)
    except BaseException:
        _close_fds(ours)
        raise
    finally:
        _close_fds((stdin_r, stdout_w, stderr_w, status_w, fds.config))
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
        limits: EffectiveLimits,
        isolation: Isolation,
        cgroup: SlotCgroupBackend | None,
    ) -> None:
        self._loop = loop
        self._namespaces = isolation.namespaces
        self._cgroup = cgroup
        self._cores = (cgroup.cores if cgroup else None) or float(os.cpu_count() or 1)
        self._helper = spawned.proc
        self._zygote = spawned.zygote
        self._started = time.monotonic()
        self._limits = limits
        self._on_output: OutputCallback | None = None
        self._status_fd: int | None = spawned.status_fd
        self._status_text = b""
        # Once started: the program's pid and process group, or the namespace's pid 1;
        # and a pidfd of that process, through which every signal of ours goes.
        self._pgid: int | None = None
        self._pidfd: int | None = None
        self._stdin_fd: int | None = spawned.stdin_fd
        self._pending_stdin = bytearray()
        self._stdin_ends = True  # close stdin once what is pending is written
        self._live: LiveInput | None = None
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
        self._skipped: dict[str, str] = {}

    def _watch(self) -> None:
        assert self._status_fd is not None
        self._loop.add_reader(self._status_fd, self._on_status)
        for fd in self._streams:
            self._loop.add_reader(fd, self._on_readable, fd)
        if self._live is not None:
            self._stdin_ends = False
            self._live.attach(self)
        elif self._pending_stdin and self._stdin_fd is not None:
            self._loop.add_writer(self._stdin_fd, self._on_writable)
        else:
            self._close_stdin()  # EOF right away
        self._wall_timer = self._loop.call_later(self._limits.wall_time_s, self._on_wall_time)
        if self._cgroup is not None or self._limits.cpu_time_s != math.ceil(
            self._limits.cpu_time_s
        ):
            # RLIMIT_CPU counts whole seconds of one process: the whole tree (with a
            # cgroup) and a fractional limit are watched from here.
            self._cpu_timer = self._loop.call_later(_CPU_POLL_S, self._on_cpu_poll)

    @property
    def helper_alive(self) -> bool:
        return self._helper.poll() is None

    async def run(
        self, stdin: bytes | LiveInput, on_output: OutputCallback | None
    ) -> SandboxResult:
        # Started ahead of time (a warm sandbox), the run's clock starts with its input.
        self._started = time.monotonic()
        self._on_output = on_output
        if isinstance(stdin, LiveInput):
            self._live = stdin
        else:
            self._pending_stdin += stdin
        self._watch()
        exited = await self._exited
        # The helper is reaped by `close`: its exit waits for the run's namespaces to be
        # torn down (0.2 ms), and the result has everything of it already.
        if self._streams:
            await asyncio.wait({self._eof}, timeout=_DRAIN_GRACE_S)
        return self._result(exited, (exited.at - self._started) * 1000)

    def close(self) -> None:
        """Release everything; if the program still runs (cancellation), kill it and wait."""
        self._cancel_timers()
        if not self._ended:  # cancelled: note that cancelling also marks `_exited` done
            self._finish_blocking()
        if self._pidfd is not None:
            _close_fds([self._pidfd])
            self._pidfd = None
        self._close_status()
        self._reap_helper()
        for fd in list(self._streams):
            self._close_stream(fd)
        self._close_stdin()

    def _finish_blocking(self) -> None:
        """Kill the program and read the helper's reports to the end (quick once killed)."""
        self._kill_group(hard=True)
        if self._status_fd is None:
            return
        self._loop.remove_reader(self._status_fd)
        os.set_blocking(self._status_fd, True)
        while not self._ended:
            self._kill_group(hard=True)
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
            if self._zygote and self._pgid is not None and not self._ended:
                # A zygote's reaper killed (with its zygote, say) leaves no one to report
                # it, as a cold run's helper would: it ended by SIGKILL.
                self._on_exit(signal.SIGKILL, 0, 0, 0)
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
                self._take_pid(int(values[0]))
                if self._killed_for is not None:
                    self._kill_group()  # a kill was asked for before the program started
            elif kind == "skipped" and len(values) == 2:
                self._skipped[values[0]] = values[1]
            elif kind == "exit":
                self._on_exit(*(int(value) for value in values))
            elif kind == "error" and not self._exited.done():
                error, step = int(values[0]), " ".join(values[1:])
                self._ended = True
                message = f"sandbox setup failed at {step}: {os.strerror(error)}"
                self._exited.set_exception(OSError(error, message))

    def _take_pid(self, pid: int) -> None:
        """Hold the run's process by a pidfd. A report is read after the fact: by then
        the process it names may have ended, been reaped and its pid been taken by
        someone else's, whom a signal by pid would reach."""
        self._pgid = pid
        if isinstance(self._helper, ZygoteChild):
            self._pidfd = self._helper.pidfd_copy()  # the zygote opened it before reaping
        elif isinstance(self._helper, subprocess.Popen):
            self._pidfd = pidfd_of_child(pid, self._helper.pid)

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
        used = self._cgroup.cpu_seconds() if self._cgroup else _cpu_seconds(self._pgid)
        left = self._limits.cpu_time_s - used
        if left <= 0:
            self._kill_group("cpu_time")
        else:
            # The tree cannot use more than `cores` CPU seconds a second: no need to
            # look again before it could have used what is left.
            self._cpu_timer = self._loop.call_later(
                max(_CPU_POLL_S, left / self._cores), self._on_cpu_poll
            )

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
            self._pending_stdin.clear()
            self._stdin_ends = True
            self._close_stdin()
            return
        del self._pending_stdin[:written]
        if not self._pending_stdin:
            self._loop.remove_writer(self._stdin_fd)
            if self._stdin_ends:
                self._close_stdin()

    # live input (interactive runs)

    def feed(self, data: bytes) -> None:
        if self._stdin_fd is None or self._stdin_ends or not data:
            return  # after EOF, or once the program has closed its stdin
        if not self._pending_stdin:
            self._loop.add_writer(self._stdin_fd, self._on_writable)
        self._pending_stdin += data

    def end_input(self) -> None:
        self._stdin_ends = True
        if not self._pending_stdin:
            self._close_stdin()

    def send_signal(self, signum: int) -> None:
        """Signal the program on a user's behalf (not a limit: no `killed_for`)."""
        if self._ended or self._pgid is None:
            return
        if signum == signal.SIGKILL:
            self._kill_group()
            return
        if self._namespaces:
            self._signal(signum)  # the reaper passes it on to the program's group
        elif self._signal(0):
            # The group's leader, alive or not yet reaped, holds the group's id: it is
            # still the run's (but for the microseconds until the next line).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._pgid, signum)

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

    def _kill_group(self, reason: KillReason | None = None, *, hard: bool = False) -> None:
        """Stop every process of the run. With namespaces, SIGUSR1 asks the namespace's
        pid 1 to kill the rest and report their usage; SIGKILL (`hard`) ends it all."""
        if reason is not None and self._killed_for is None:
            self._killed_for = reason
        if self._ended:
            return  # reaped: its pid may belong to someone else
        # Without namespaces the program's end is enough: the helper then kills its group.
        self._signal(signal.SIGUSR1 if self._namespaces and not hard else signal.SIGKILL)

    def _signal(self, signum: int) -> bool:
        """Send `signum` to the run's process (0: only look); False if it is gone, or
        not started yet."""
        return self._pidfd is not None and send(self._pidfd, signum)

    def _reap_helper(self) -> None:
        # The helper exits right after its last report (once the reaper and with it the
        # run's namespaces are gone), so this wait is short.
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
        kernel: CgroupUsage | None = self._cgroup.usage() if self._cgroup else None
        return SandboxResult(
            exit_code=None if signaled else os.WEXITSTATUS(exited.status),
            signal=os.WTERMSIG(exited.status) if signaled else None,
            stdout=bytes(self._output["stdout"]),
            stderr=bytes(self._output["stderr"]),
            output_truncated=self._truncated,
            wall_clock_timeout=self._wall_clock_timeout,
            killed_for=self._killed_for,
            cpu_time_ms=kernel.cpu_time_ms if kernel else exited.cpu_time_ms,
            wall_time_ms=wall_time_ms,
            peak_memory_bytes=kernel.peak_memory_bytes if kernel else exited.peak_memory_bytes,
            memory_limit_hit=kernel.oom_killed if kernel else None,
            process_limit_hit=kernel.process_limit_hit if kernel else None,
            skipped_outputs=dict(self._skipped),
            zygote=self._zygote,
        )


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its reaped children, from /proc (0 once it is gone)."""
    try:
        return cpu_seconds_with_children(pid)
    except (OSError, IndexError):
        return 0.0
