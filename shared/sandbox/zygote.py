"""Python zygotes: one interpreter started ahead, forked into a fresh sandbox per run.

A Python run pays its interpreter's start-up (10-15 ms of CPU) each time, even in a warm
sandbox (`warm.py` only moves it off the request's path). A zygote pays it once: the
system interpreter, started with the environment and flags of a sandboxed run, runs
`zygote_script.py` and waits on a control socket. Per run it calls the C helper's own
code as a library (`helper_library`, `dcodex_start` in sandbox_exec.c): it clones the
run's reaper straight into fresh namespaces (a cold run's outer helper, a copy of the
interpreter made only to clone it, is not needed), and the reaper builds every layer of
a cold run with the same code; only the sandboxed program returns into the interpreter
to run the script as `python3 -u main.py` would. The helper's status protocol is
unchanged ("pid", "exit", "error"), so `run.py` supervises such a run as it does any
other; the zygote, not the runner, reaps the reaper, which the runner watches through a
pidfd (`ZygoteChild`).

Every child shares the zygote's hash secret and address-space layout: a zygote is
replaced after `max_forks` runs or `max_age_s` seconds (docs/security.md).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from dcodex.shared.sandbox.helper import helper_library

log = structlog.get_logger("dcodex.sandbox")

# The quick exit's functions first: the script's runs end with them.
_SCRIPT = "\n".join(
    Path(__file__).with_name(name).read_text()
    for name in ("quick_exit_script.py", "zygote_script.py")
)
# The zygote's command line, all a sandboxed program sees of it (/proc/1/cmdline): the
# script itself comes on a descriptor.
_BOOT = "import os,sys;_f=int(sys.argv[1]);_s=os.read(_f,1<<20);os.close(_f);exec(_s)"
# How long a fork request may take before the zygote is given up for broken.
SPAWN_TIMEOUT_S = 2.0
# After a zygote failed to start or died, the next start waits this long.
RETRY_AFTER_S = 1.0
MAX_FORKS = 1000
MAX_AGE_S = 600.0


class ZygoteUnavailable(Exception):
    """The zygote could not fork this run (the run goes the cold way)."""


class ZygoteChild:
    """The reaper a zygote started for one run, as the supervisor sees it (in place of
    the `Popen` of a cold run's helper): alive until its pidfd becomes readable."""

    def __init__(self, pidfd: int) -> None:
        self._pidfd: int | None = pidfd
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self._wait(0.0)

    def pidfd_copy(self) -> int | None:
        """A pidfd of the reaper, the caller's to close (None once it has ended)."""
        return None if self._pidfd is None else os.dup(self._pidfd)

    def wait(self) -> int:
        code = self._wait(None)
        assert code is not None
        return code

    def _wait(self, timeout: float | None) -> int | None:
        if self._pidfd is not None and select.select([self._pidfd], [], [], timeout)[0]:
            os.close(self._pidfd)
            self._pidfd = None
            # Its status is the zygote's to reap; the run's own status came as a report.
            self.returncode = 0
        return self.returncode


class Zygote:
    """One zygote process: `interpreter` (argv up to the script) under `env`."""

    def __init__(self, interpreter: Sequence[str], env: Mapping[str, str]) -> None:
        self.started = time.monotonic()
        self.forks = 0
        self.broken = False  # it failed a request: no more runs, its own go on
        self._ready = False
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        library = _memory_copy(Path(helper_library()).read_bytes(), "dcodex-zygote")
        script = _memory_copy(_SCRIPT.encode(), "dcodex-zygote-script")
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        # Its stderr is a pipe as a run's is (start-up looks at what its streams are);
        # kept to say why it died, should it.
        self._stderr, stderr_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    *interpreter,
                    "-c",
                    _BOOT,
                    str(script),
                    *map(str, (theirs.fileno(), library, os.getpid())),
                ],
                executable=interpreter[0],
                stdin=stdin_r,
                stdout=stdout_w,
                stderr=stderr_w,
                env=dict(env),
                cwd="/",
                close_fds=True,
                pass_fds=(script, theirs.fileno(), library),
                start_new_session=True,
            )
        except BaseException:
            self._control.close()
            os.close(self._stderr)
            raise
        finally:
            theirs.close()
            for fd in (script, library, stdin_r, stdin_w, stdout_r, stdout_w, stderr_w):
                os.close(fd)
        os.set_blocking(self._stderr, False)
        self._control.setblocking(False)

    @property
    def alive(self) -> bool:
        return not self.broken and self.process.poll() is None

    def ready(self) -> bool:
        """Started and serving (it says so once, when its start-up is done)."""
        if not self._ready and self.alive:
            with contextlib.suppress(BlockingIOError):
                self._ready = self._control.recv(16) == b"ready"
        return self._ready and self.alive

    def spawn(self, fds: Sequence[int], user_namespace: bool = False) -> ZygoteChild:
        """Start a run; `fds` are its stdin, stdout, stderr, status and options
        descriptors (the options say `--status-fd 3` and hold the program's argv, read
        only by the run's reaper: the zygote never sees what a run is), and whether its
        namespaces include a user namespace (as its options say)."""
        request = b"run userns" if user_namespace else b"run"
        try:
            self._control.settimeout(SPAWN_TIMEOUT_S)
            socket.send_fds(self._control, [request], list(fds))
            reply, got, _flags, _address = socket.recv_fds(self._control, 256, 1)
        except OSError as exc:
            # Replaced, not killed: the runs it forked before are not its fault.
            self.broken = True
            self.retire()
            raise ZygoteUnavailable(f"the zygote did not answer: {exc!r}") from exc
        finally:
            with contextlib.suppress(OSError):
                self._control.setblocking(False)
        if reply != b"ok" or len(got) != 1:
            for fd in got:
                os.close(fd)
            raise ZygoteUnavailable(f"the zygote refused the run: {reply!r}")
        self.forks += 1
        return ZygoteChild(got[0])

    def retire(self) -> None:
        """No more runs: it ends once the runs it forked have (their helpers die with it)."""
        self._control.close()

    def kill(self) -> None:
        """End it now, with every run it forked (their helpers have it as parent-death)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self._control.close()

    def reaped(self) -> bool:
        """Whether it has ended and been waited for; then its last words are logged."""
        if self.process.poll() is None:
            return False
        with contextlib.suppress(OSError):
            said = os.read(self._stderr, 65536)
            if said:
                log.warning("zygote_said", stderr=said.decode(errors="replace")[-2000:])
            os.close(self._stderr)
        return True


class ZygoteKeeper:
    """A zygote for runs of `interpreter` + script + args under `env`, kept started:
    restarted when it dies, replaced after `max_forks` runs or `max_age_s` seconds."""

    def __init__(
        self,
        interpreter: Sequence[str],
        env: Mapping[str, str],
        *,
        max_forks: int = MAX_FORKS,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self.interpreter = tuple(interpreter)
        self.env = dict(env)
        self.max_forks = max_forks
        self.max_age_s = max_age_s
        self.starts = 0
        self._current: Zygote | None = None
        self._next: Zygote | None = None
        self._retired: list[Zygote] = []
        self._retry_at = 0.0
        self._closed = False

    def start(self) -> None:
        """Start the first zygote now (it becomes ready in the background)."""
        self._current = self._start()

    def serves(self, program: Sequence[str], env: Mapping[str, str]) -> bool:
        """Whether `program` (an argv whose first item is a path) is a run this keeper's
        zygotes can fork: the interpreter, flags and environment they were started with,
        then a script in the working directory or `-c` and code (a warm sandbox's)."""
        count = len(self.interpreter)
        if tuple(program[:count]) != self.interpreter or len(program) <= count:
            return False
        script = program[count]
        if script == "-c":
            if len(program) <= count + 1:
                return False
        elif "/" in script or script.startswith("-") or not script:
            return False
        return dict(env) == self.env and not any("\0" in part for part in program)

    def zygote(self) -> Zygote | None:
        """A ready zygote, or None (starting, or unable to start: the run goes cold)."""
        if self._closed:
            return None
        self._retired = [old for old in self._retired if not old.reaped()]
        current = self._current
        if current is not None and not current.alive:
            log.warning("zygote_died", pid=current.process.pid, forks=current.forks)
            self._retired.append(current)
            self._current = current = None
            self._retry_at = time.monotonic() + RETRY_AFTER_S
        if current is None:
            if time.monotonic() < self._retry_at:
                return None
            self._current = current = self._start()
            if current is None:
                return None
        if current.forks >= self.max_forks or time.monotonic() - current.started > self.max_age_s:
            self._replace(current)
            current = self._current
        return current if current is not None and current.ready() else None

    def _replace(self, old: Zygote) -> None:
        """Switch to a fresh zygote once it is ready; the old one serves until then."""
        if self._next is None:
            self._next = self._start()
        if self._next is not None and self._next.ready():
            old.retire()
            self._retired.append(old)
            self._current, self._next = self._next, None

    def _start(self) -> Zygote | None:
        try:
            zygote = Zygote(self.interpreter, self.env)
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            log.warning("zygote_not_started", error=repr(exc))
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            return None
        self.starts += 1
        return zygote

    def close(self) -> None:
        """End the zygotes (runs in flight end with them: call once no run is left)."""
        self._closed = True
        for zygote in (self._current, self._next, *self._retired):
            if zygote is not None:
                zygote.kill()
                zygote.process.wait()
                zygote.reaped()
        self._current = self._next = None
        self._retired = []


def _memory_copy(data: bytes, name: str) -> int:
    """`data` in an anonymous memory file (what /proc/PID/maps shows of it is
    "/memfd:NAME", never a host path); inheritable, at offset 0."""
    fd = os.memfd_create(name, 0)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
