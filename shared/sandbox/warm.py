"""Warm interpreters: Python sandboxes started before the run that will use them.

A cold Python run starts its sandbox and then its interpreter after the request has
arrived, and the interpreter's start-up (10-15 ms of CPU) is most of a hello world's
time. A warm run finds both done: a sandbox started ahead of time, exactly as a cold
run's (the same helper, slot uid, cgroup, rlimits, no_new_privs, namespaces, tmpfs root
and read-only view, clean environment), whose interpreter has initialised and waits,
blocked on its stdin, for the one program it will run.

The run hands over the program's file name, source and arguments on stdin (`handover`),
followed by the program's own stdin. The interpreter (`LOADER`) writes the source into
its working directory, makes itself look as `python3 -u main.py ARGS` would (argv,
sys.path, `__main__`), and runs it; when it ends, the sandbox ends. Each warm sandbox
serves one run and is then gone: nothing of one run is there for another. Only the
wall-clock limit and the output start with the handover; CPU time and memory count the
interpreter's start-up as a cold run's do.

Native programs (a compiled binary) get warm sandboxes too, one level lower: a
*deferred* sandbox (`WarmSpec.deferred`) is set up to the program's `execv`, where it
waits for the files and argv of its program (`handover.py`): the binary is written into
/box and exec'd, every layer set up before as for a cold run.

`WarmPool` keeps `size` of them started, on slots of their own (so they take no slot
from cold runs), and starts the next one as soon as one is used (or a set delay later,
cut short when a run finds none ready); it serves either kind, by its spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.sandbox.handover import HandedFile, deferred_handover
from dcodex.shared.sandbox.isolation import Isolation
from dcodex.shared.sandbox.run import (
    OutputCallback,
    SandboxResult,
    StartedSandbox,
    program_argv,
    start_sandboxed,
)
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.sandbox.workspace import hand_over, owned_directory
from dcodex.shared.sandbox.zygote import ZygoteKeeper

log = structlog.get_logger("dcodex.sandbox")
T = TypeVar("T")

# After a failed start, the next try waits this long (a broken host must not spin).
RETRY_AFTER_S = 1.0
# Turns of the event loop a pool lets pass after a run before it starts the next
# sandbox (`WarmPool._keep_one`): one suffices when the run's task goes on to send its
# reply without waiting on anything, as the services' do; each further one covers one
# wait on the way.
TURNS_BEFORE_REFILL = 3
_LENGTH_DIGITS = 10

# Runs inside the sandbox, as `python3 -u -c LOADER`. It imports nothing that start-up
# has not imported already, and leaves nothing of itself in `__main__`. The program's
# end is the quick exit's (`quick_exit_script.py`), taken as locals first.
LOADER = (
    Path(__file__).with_name("quick_exit_script.py").read_text()
    + r"""
def _dcodex_warm():
    leave, flush_io = _dcodex_leave, _dcodex_flush_io
    import os, sys
    # What runs after the program would look these up in its globals: ours instead.
    from builtins import BaseException, KeyboardInterrupt, SystemExit, int, isinstance, type
    builtins = sys.modules["builtins"]
    def read(count):
        data = b""
        while len(data) < count:
            chunk = os.read(0, count - len(data))
            if not chunk:
                raise SystemExit(0)  # ended unused
            data += chunk
        return data
    name, source, *args = read(int(read(LENGTH_DIGITS))).split(b"\0")
    name = name.decode()
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    os.write(fd, source)
    os.close(fd)
    path = os.path.join(os.getcwd(), name)
    sys.argv[:] = [name, *(os.fsdecode(arg) for arg in args)]
    sys.path[0] = os.path.dirname(path)
    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path)
    main = sys.modules["__main__"].__dict__
    main.clear()
    # The names, in the order, of a cold start's `__main__`.
    main.update(__name__="__main__", __doc__=None, __package__=None, __loader__=loader,
                __spec__=None, __annotations__={}, __builtins__=builtins, __file__=path,
                __cached__=None)
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as error:
        sys.excepthook(type(error), error.with_traceback(None), None)
        raise SystemExit(1) from None
    streams = (sys.stdin, sys.stdout, sys.stderr)
    try:
        try:
            exec(code, main)
        finally:
            flush_io()
    except SystemExit as exit:
        status = exit.code
        if status is None or type(status) is int and 0 <= status < 256:
            del exit
            leave(status or 0, streams)
        raise
    except BaseException as error:
        # The program's frames only, as `python3 main.py` shows them.
        error = error.with_traceback(error.__traceback__.tb_next)
        sys.excepthook(type(error), error, error.__traceback__)
        if isinstance(error, KeyboardInterrupt):
            import signal
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(1) from None
    leave(0, streams)
_dcodex_warm()
""".replace("LENGTH_DIGITS", str(_LENGTH_DIGITS))
)


def python_script_run(run: Sequence[str], source: str) -> bool:
    """Whether `run` is a Python interpreter running the script `source` (`python3 -u
    main.py`): what warm interpreters and the zygote can start ahead."""
    return len(run) >= 2 and run[-1] == source and Path(run[0]).name.startswith("python")


def warm_argv(run: Sequence[str], source: str) -> list[str] | None:
    """The warm interpreter's argv for a language run as `run` (`python3 -u main.py`):
    its source file replaced by the loader. None when `run` is not a Python one."""
    if not python_script_run(run, source):
        return None
    return [*run[:-1], "-c", LOADER]


def handover(source_name: str, code: str, args: Sequence[str]) -> bytes | None:
    """What the loader reads first; None when a NUL byte makes it unsendable (a cold run
    then reports what Python says of such a program)."""
    fields = [source_name, code, *args]
    if any("\0" in field for field in fields):
        return None
    payload = b"\0".join(os.fsencode(field) for field in fields)
    return b"%0*d" % (_LENGTH_DIGITS, len(payload)) + payload


@dataclass(frozen=True)
class WarmSpec:
    """What warm sandboxes are started with; a run may take one only if it asks the same."""

    argv: tuple[str, ...]  # from `warm_argv`; () when `deferred`
    source_name: str  # the interpreter's source file ("" when `deferred`)
    env: Mapping[str, str]
    limits: EffectiveLimits
    read_only: tuple[str, ...] = ()
    # Set up to the program's exec, which waits for a `deferred_handover` (native runs).
    deferred: bool = False
    address_space: int | None = None  # RLIMIT_AS when not the memory limit
    outputs: tuple[str, ...] = ()  # copied back from /box at the end (a compile's binary)


class WarmSandbox:
    """One started sandbox waiting for its program; `run` uses it up. A run returns as
    soon as its program has ended: `settle` (its pool's, after the reply) must follow
    before the slot is used again."""

    def __init__(self, spec: WarmSpec, slot: Slot, zygote: ZygoteKeeper | None = None) -> None:
        self.spec = spec
        self.layers = slot.isolation.layers  # what the run is isolated by, for its result
        self.used: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._discarded = False
        # Its files come with the handover into its own tmpfs; a compile's outputs come
        # back here, and stay off the memory-backed staging root.
        staged = slot.isolation.namespaces and not spec.outputs
        self._workdir = owned_directory("dcodex-warm-", staged)
        try:
            hand_over(self._workdir, slot)
            self._started: StartedSandbox = start_sandboxed(
                spec.argv,
                cwd=self._workdir,
                limits=spec.limits,
                env=spec.env,
                slot=slot,
                read_only=spec.read_only,
                # It waits for its run: the helper's own wall clock would end it first.
                # (Its parent-death signal still ends it with the runner.)
                wall_backstop=False,
                deferred=spec.deferred,
                address_space=spec.address_space,
                outputs=spec.outputs,
                # Forked from a ready zygote rather than started: no interpreter start-up.
                zygote=zygote,
            )
        except BaseException:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise

    @property
    def alive(self) -> bool:
        return self._started.alive

    @property
    def directory(self) -> Path:
        """The host directory its tmpfs root is mounted over (removed by `settle`)."""
        return self._workdir

    async def run(
        self, code: str, args: Sequence[str], stdin: bytes, on_output: OutputCallback | None
    ) -> SandboxResult:
        """Run Python `code` with `args` in a warm interpreter."""
        if self.spec.deferred:
            raise RuntimeError("a deferred sandbox runs a handed-over program: run_program")
        first = handover(self.spec.source_name, code, args)
        if first is None:
            raise ValueError("a program or argument with a NUL byte cannot be handed over")
        return await self.run_handover(first, stdin, on_output)

    async def run_program(
        self,
        files: Sequence[HandedFile],
        argv: Sequence[str],
        stdin: bytes,
        on_output: OutputCallback | None,
        collect: Callable[[Path], None] | None = None,
    ) -> SandboxResult:
        """Run `argv` (looked up as a cold run's) in a deferred sandbox, `files` in /box;
        `collect` is given the host directory the spec's `outputs` were copied back to."""
        if not self.spec.deferred:
            raise RuntimeError("only a deferred sandbox takes a program")
        first = deferred_handover(files, program_argv(argv, self.spec.env))
        if first is None:
            raise ValueError("this program or its arguments cannot be handed over")
        return await self.run_handover(first, stdin, on_output, collect)

    async def run_handover(
        self,
        first: bytes,
        stdin: bytes,
        on_output: OutputCallback | None,
        collect: Callable[[Path], None] | None = None,
    ) -> SandboxResult:
        """Send `first` (the handover), then the run's `stdin`, and supervise the run."""
        if self.used.done():
            raise RuntimeError("this warm sandbox was used up: each serves one run")
        try:
            result = await self._started.outcome(first + stdin, on_output)
            if collect is not None:
                collect(self._workdir)
            return result
        finally:
            # Its clean-up (what is left of the run killed, its cgroup emptied, its
            # directory removed: a few hundred microseconds) is the pool's, after the
            # run's reply; until then its slot stays taken.
            self._mark_used()

    async def settle(self) -> None:
        """After its run: everything of it ended and removed, its cgroup empty."""
        try:
            await self._started.settle()
        finally:
            self.discard()

    def discard(self) -> None:
        """End it (unused, or after its run) and free its slot for the next one; once
        (its pool discards what `settle` has already)."""
        if self._discarded:
            return
        self._discarded = True
        self._started.close()
        shutil.rmtree(self._workdir, ignore_errors=True)
        self._mark_used()

    def _mark_used(self) -> None:
        if not self.used.done():
            self.used.set_result(None)


class WarmPool:
    """`size` warm sandboxes of `spec`, each on a slot of `slots`, kept started, for the
    `languages` (ids) whose runs or compiles that spec fits. `refill_gate`, when given,
    is awaited before each sandbox starts (the runner's waits for a spare core).
    `refill_delay_s`: how long after a run its slot's cleanup and the next start wait,
    unless a run finds no sandbox ready first (the compiler's: the rest of the request's
    path, after its reply, has the cores first)."""

    def __init__(
        self,
        spec: WarmSpec,
        slots: SlotPool,
        size: int,
        languages: Iterable[str] = (),
        zygote: ZygoteKeeper | None = None,
        refill_gate: Callable[[], Awaitable[None]] | None = None,
        refill_delay_s: float = 0.0,
    ) -> None:
        self.spec = spec
        self.slots = slots
        self.size = size
        self.languages = frozenset(languages)
        self.zygote = zygote
        self.refill_gate = refill_gate
        self.refill_delay_s = refill_delay_s
        self._wanted = asyncio.Event()  # a run found none ready: refill now
        self._ready: deque[WarmSandbox] = deque()
        self._keepers: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self) -> None:
        self._keepers = [asyncio.create_task(self._keep()) for _ in range(self.size)]

    def serves(self, language_id: str) -> bool:
        return language_id in self.languages

    def take(self) -> WarmSandbox | None:
        """A started sandbox, or None when none is (all in use, or still starting)."""
        while self._ready:
            warm = self._ready.popleft()
            if warm.alive:
                return warm
            warm.discard()  # ended while waiting (killed from outside): start another
        self._wanted.set()
        return None

    def close(self) -> None:
        """End every warm sandbox and remove the slots' cgroups (once no run is left)."""
        self._closed = True
        for keeper in self._keepers:
            keeper.cancel()
        while self._ready:
            self._ready.popleft().discard()
        self.slots.close()

    async def _keep(self) -> None:
        """Keep one warm sandbox started: a new one as soon as the last is used up."""
        try:
            await self._keep_one()
        except OSError:
            if not self._closed:
                raise  # a slot left unclean; else: closed under us, its cgroups gone

    async def _keep_one(self) -> None:
        while True:
            if self.refill_gate is not None:
                await self.refill_gate()
            async with self.slots.acquire() as slot:
                try:
                    warm = WarmSandbox(self.spec, slot, self.zygote)
                except (OSError, RuntimeError) as exc:
                    log.warning("warm_sandbox_not_started", error=repr(exc))
                    await asyncio.sleep(RETRY_AFTER_S)
                    continue
                self._ready.append(warm)
                self._wanted.clear()  # wanted: none ready since this one was
                try:
                    await warm.used
                    # The run's task is on its way to its reply, and nats-py writes a
                    # reply in a task of its own, woken after this one: starting the
                    # next sandbox now (the slot's cleanup, a fork: milliseconds of this
                    # loop) would hold the reply back. Let them go first.
                    for _ in range(TURNS_BEFORE_REFILL):
                        await asyncio.sleep(0)
                    await self._delay_refill()
                    # A run whose processes would not end leaves its slot out of
                    # service (`SlotPool` logs it); its result has gone out already.
                    with contextlib.suppress(OSError):
                        await warm.settle()
                finally:
                    with contextlib.suppress(ValueError):
                        self._ready.remove(warm)
                    warm.discard()

    async def _delay_refill(self) -> None:
        """Up to `refill_delay_s`; over at once when a run has found no sandbox ready."""
        if self.refill_delay_s > 0 and not self._wanted.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), self.refill_delay_s)


def first_and_alike(
    items: Sequence[T], spec_of: Callable[[T], WarmSpec]
) -> tuple[WarmSpec, list[T]]:
    """The spec of the first of `items`, and every item set up the same way: one pool of
    that spec serves them all (C's and C++'s runs, say)."""
    spec = spec_of(items[0])
    return spec, [item for item in items if spec_of(item) == spec]


def start_warm_pool(
    spec: WarmSpec,
    size: int,
    *,
    isolation: Isolation,
    uid_base: int,
    service: str,
    languages: Iterable[str],
    refill_gate: Callable[[], Awaitable[None]] | None = None,
    refill_delay_s: float = 0.0,
) -> WarmPool:
    """A started pool of `size` sandboxes of `spec` on slots of their own (uids from
    `uid_base`, cgroups named after `service`)."""
    slots = SlotPool(size, uid_base, isolation=isolation, service=service)
    pool = WarmPool(
        spec, slots, size, languages, refill_gate=refill_gate, refill_delay_s=refill_delay_s
    )
    pool.start()
    return pool
