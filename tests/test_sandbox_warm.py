"""Warm interpreters: a Python sandbox started before its run behaves as a cold run's
does, with every layer on, and serves one run only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR
from dcodex.shared.sandbox.run import SandboxResult, run_sandboxed
from dcodex.shared.sandbox.slots import SlotPool, open_slot_pool
from dcodex.shared.sandbox.warm import (
    LOADER,
    WarmPool,
    WarmSandbox,
    WarmSpec,
    handover,
    warm_argv,
)
from dcodex.shared.sandbox.workspace import hand_over, workspace, write_file
from tests.conftest import host_processes

# Sandboxes on slots of their own: a uid per slot and its cgroups need root.
pytestmark = pytest.mark.root

MiB = 2**20
LIMITS = EffectiveLimits(
    cpu_time_s=1.0,
    wall_time_s=2.0,
    memory_bytes=512 * MiB,
    output_bytes=64 * 1024,
    processes=16,
    file_size_bytes=1 * MiB,
)
RUN = ("python3", "-u", "main.py")
ENV = clean_env(Path(SANDBOX_WORKDIR))


@pytest.fixture
async def pool() -> AsyncIterator[SlotPool]:
    slots = await open_slot_pool(
        "strict", size=4, uid_base=62100, disk_bytes=64 * MiB, max_queued=None, service="warmtest"
    )
    try:
        yield slots
    finally:
        slots.close()


def spec(limits: EffectiveLimits = LIMITS) -> WarmSpec:
    argv = warm_argv(RUN, "main.py")
    assert argv is not None
    return WarmSpec(tuple(argv), "main.py", ENV, limits)


async def cold(
    slots: SlotPool, code: str, stdin: bytes = b"", args: tuple[str, ...] = ()
) -> SandboxResult:
    async with slots.acquire() as slot:
        with workspace(prefix="dcodex-test-") as cwd:
            write_file(cwd, "main.py", textwrap.dedent(code).encode(), slot, mode=0o400)
            hand_over(cwd, slot)
            return await run_sandboxed(
                [*RUN, *args], cwd=cwd, limits=LIMITS, stdin=stdin, env=ENV, slot=slot
            )


async def warm(
    slots: SlotPool, code: str, stdin: bytes = b"", args: tuple[str, ...] = (), idle_s: float = 0
) -> SandboxResult:
    async with slots.acquire() as slot:
        sandbox = WarmSandbox(spec(), slot)
        try:
            await asyncio.sleep(idle_s)
            return await sandbox.run(textwrap.dedent(code), args, stdin, None)
        finally:
            await sandbox.settle()  # before the slot goes back: as a pool does


# What a program can see of itself and of its sandbox: the same cold and warm.
PROBE = """
    import os, socket, sys
    print(list(globals()))  # `__main__`'s names, in their order
    print(sys.argv, __name__, __file__, sys.path[0], os.getcwd())
    print(os.getuid(), os.getgid(), os.getpid(), sorted(os.listdir("/")))
    print(sorted(os.environ.items()))
    print(open("/proc/self/status").read().split("NoNewPrivs:")[1].split()[0])
    import resource
    print([resource.getrlimit(r) for r in (resource.RLIMIT_CPU, resource.RLIMIT_AS,
           resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE, resource.RLIMIT_CORE)])
    print(sorted(os.listdir("/box")), os.access("/usr", os.W_OK), os.path.exists("/etc/passwd"))
    print(open("/proc/self/cgroup").read())
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1)
        print("network: reached the host")
    except OSError as error:
        print("network: none", error.errno)
    print(sys.stdin.read(), sys.argv[1:])
"""


async def test_a_warm_run_sees_what_a_cold_run_sees_every_layer_on(pool: SlotPool) -> None:
    stdin, args = b"the input\nof the run", ("one", "two words")
    cold_run = await cold(pool, PROBE, stdin, args)
    warm_run = await warm(pool, PROBE, stdin, args)
    assert cold_run.exit_code == 0, cold_run.stderr
    assert warm_run.exit_code == 0, warm_run.stderr
    cold_lines, warm_lines = cold_run.stdout.decode(), warm_run.stdout.decode()
    # Each ran on a slot of its own: the uid and the cgroup are the slot's.
    assert _without_slot(cold_lines) == _without_slot(warm_lines)
    assert "['main.py', 'one', 'two words'] __main__ /box/main.py /box /box" in warm_lines
    assert "network: none" in warm_lines and "the input\nof the run" in warm_lines
    assert "\n1\n" in warm_lines  # NoNewPrivs
    assert " 2 [" in warm_lines  # pid 2 of a pid namespace of its own (the reaper is 1)


def _without_slot(text: str) -> list[str]:
    """The probe's lines but those naming the slot (uid and cgroup)."""
    return [line for line in text.splitlines() if not re.match(r"(\d+:|62\d\d\d )", line)]


# Programs whose globals shadow builtins the run's own code uses once they end (the
# quick exit, the loader's and the zygote's handlers run with the program's globals).
SHADOWING = {
    "any and atexit": "import atexit\nany = 0\natexit.register(print, 'bye')\n",
    "type and an error": "type = None\nraise ValueError('x')\n",
    "SystemExit and exit": "import sys\nSystemExit = None\nsys.exit('msg')\n",
    "list, id, map": "list = None\nid = 0\nmap = any = set = str = None\nprint('hi')\n",
    "isinstance and KeyboardInterrupt": "isinstance = KeyboardInterrupt = int = 0\n"
    "raise RuntimeError('r')\n",
}


async def test_errors_read_as_a_cold_runs(pool: SlotPool) -> None:
    for code in (
        "def f():\n    raise ValueError('nope')\nf()\n",
        "print('unclosed'\n",
        "import sys\nprint('out')\nsys.exit(3)\n",
        *SHADOWING.values(),
    ):
        cold_run, warm_run = await cold(pool, code), await warm(pool, code)
        assert (warm_run.exit_code, warm_run.stdout) == (cold_run.exit_code, cold_run.stdout)
        assert warm_run.stderr == cold_run.stderr, (code, warm_run.stderr, cold_run.stderr)


# Programs whose end shows something: a warm run finalises its interpreter for them, as
# a cold run does (for the others it leaves without, which nothing can see).
ENDINGS = {
    "atexit": "import atexit\natexit.register(print, 'at exit')\nprint('main')",
    "finaliser": "class A:\n    def __del__(self):\n        print('deleted')\na = A()",
    "untracked": "class A:\n    __slots__ = ()\n"
    "    def __del__(self):\n        print('gone')\na = A()",
    "generator": "def g():\n    try:\n        yield 1\n    finally:\n        print('finally')\n"
    "x = g()\nnext(x)",
    "thread": "import threading, time\n"
    "threading.Thread(target=lambda: (time.sleep(0.1), print('thread'))).start()",
    "open file": "f = open(1, 'w', closefd=False)\nf.write('buffered, flushed at the end')",
    "C stdio": "import ctypes\nctypes.CDLL(None).printf(b'from libc\\n')\nprint('python')",
    "own stdout": "import sys\nclass Out:\n"
    "    def write(self, s): self.s = getattr(self, 's', '') + s\n"
    "    def flush(self): sys.__stdout__.write('flushed: ' + getattr(self, 's', ''))\n"
    "sys.stdout = Out()\nprint('late')",
    "exit 3": "import sys\nprint('x')\nsys.exit(3)",
    "exit message": "import sys\nsys.exit('a message')",
    "exit True": "raise SystemExit(True)",
    "plain": "import json, math\nprint(json.dumps(math.pi))",
    # A class from start-up given a finaliser: its instances from start-up have one now.
    "older class": "type(quit).__del__ = lambda self: print('finalised', self)",
    # Objects the program froze: `gc.get_objects()` no longer lists them.
    "frozen": "import gc\nclass A:\n    def __del__(self):\n        print('deleted')\n"
    "a = A()\ngc.freeze()\nprint('frozen', gc.get_freeze_count() > 0)",
}


# For the quick exit: programs after which finalisation shows nothing (left without it),
# and the others, after which it runs. A weakref's callback is one of these: CPython
# calls none at the end, but it could.
FINALISATION = {
    "hello": "print('hi')",
    "weakref": "import weakref\nclass A: pass\na = A()\nr = weakref.ref(a, print)",
    **{name: code for name, code in ENDINGS.items() if name != "exit True"},
}
LEFT_QUICKLY = ("hello", "plain", "exit 3")


@pytest.mark.parametrize("code", ENDINGS.values(), ids=ENDINGS.keys())
async def test_a_program_ends_as_in_a_cold_run(pool: SlotPool, code: str) -> None:
    cold_run, warm_run = await cold(pool, code), await warm(pool, code)
    assert cold_run.stdout or cold_run.stderr or cold_run.exit_code, "each shows something"
    assert (warm_run.exit_code, warm_run.stdout) == (cold_run.exit_code, cold_run.stdout)
    assert warm_run.stderr == cold_run.stderr


def test_an_interpreter_is_finalised_only_when_that_shows_something(tmp_path: Path) -> None:
    """`python3 -v` says when it finalises (its `# cleanup` lines): not after a program
    that left nothing for it to run, and after every one that did."""

    def finalised(code: str) -> bool:
        cwd = tmp_path / str(len(list(tmp_path.iterdir())))
        cwd.mkdir()
        ran = subprocess.run(
            ["/usr/bin/python3", "-v", "-u", "-c", LOADER],
            input=handover("main.py", code, []),
            cwd=cwd,
            capture_output=True,
            check=False,
        )
        return b"# cleanup" in ran.stderr

    for name, code in FINALISATION.items():
        assert finalised(code) == (name not in LEFT_QUICKLY), name


async def test_the_wall_clock_starts_with_the_run_not_with_the_sandbox(pool: SlotPool) -> None:
    limits_wall_s = LIMITS.wall_time_s
    result = await warm(pool, "print('late but fine')", idle_s=limits_wall_s + 0.5)
    assert result.stdout == b"late but fine\n" and not result.wall_clock_timeout
    assert result.wall_time_ms < limits_wall_s * 1000


async def test_the_limits_hold_in_a_warm_run(pool: SlotPool) -> None:
    result = await warm(pool, "while True: pass")
    assert result.killed_for == "cpu_time" or result.signal is not None, result
    big = await warm(pool, "block = bytearray(1024 * 2**20)")
    assert big.exit_code != 0 and b"MemoryError" in big.stderr


async def test_a_pool_gives_each_sandbox_to_one_run_and_keeps_them_started() -> None:
    async with started_pool(2, 62200, "warmpool") as pool:
        taken = await take_started(pool)
        first = await taken.run("open('/tmp/left', 'w').write('x'); print('first')", (), b"", None)
        assert first.stdout == b"first\n"
        with pytest.raises(Exception):  # noqa: B017  (used up: nothing runs twice)
            await taken.run("print('again')", (), b"", None)
        # The next one is a fresh sandbox: nothing of the first run is there.
        second = await (await take_started(pool)).run(
            "import os; print(os.path.exists('/tmp/left'))", (), b"", None
        )
        assert second.stdout == b"False\n", second
        third, fourth = await take_started(pool), await take_started(pool)
        assert third is not fourth
        assert pool.take() is None, "both are taken; a third is not started until one is used"
        results = await asyncio.gather(
            third.run("print(3)", (), b"", None), fourth.run("print(4)", (), b"", None)
        )
        assert [r.stdout for r in results] == [b"3\n", b"4\n"]


async def test_the_next_sandbox_starts_after_what_the_run_wakes_next() -> None:
    """A service's reply is written by nats-py's flusher task, woken as the reply is
    sent, just after the run: the pool's next sandbox (a fork, milliseconds of the
    loop) must not start before that, or every reply waits for it. Here the run's
    caller wakes a callback in the flusher's place; the pool has not refilled yet when
    it runs, and has soon after."""
    refilled_first: list[bool] = []
    async with started_pool(1, 62250, "warmnext") as pool:
        taken = await take_started(pool)
        result = await taken.run("print('ran')", (), b"", None)
        # Nothing awaited since the run ended, as in a service on its way to its reply.
        asyncio.get_running_loop().call_soon(lambda: refilled_first.append(bool(pool._ready)))
        next_one = await take_started(pool)
        assert result.stdout == b"ran\n" and next_one is not taken
        assert refilled_first == [False], "the next sandbox started before the reply's turn"


async def test_a_run_is_answered_before_its_clean_up_which_comes_before_the_next() -> None:
    """A run's result does not wait for its sandbox's clean-up (its directory removed,
    its cgroup emptied: a few hundred microseconds a run); the pool does that after the
    reply, and the slot's next sandbox starts only once it is done: nothing the run
    left behind is there."""
    async with started_pool(1, 62270, "warmclean") as pool:
        taken = await take_started(pool)
        left_behind = "import subprocess\nsubprocess.Popen(['sleep', '30'])\nprint('left')\n"
        result = await taken.run(left_behind, (), b"", None)
        assert result.stdout == b"left\n", result
        assert taken.directory.exists(), "the result waited for the clean-up"
        next_one = await take_started(pool)
        assert next_one is not taken and not taken.directory.exists()
        assert not processes_of(62270, "sleep"), "the run's sleeper outlived its sandbox"
        assert not zombie_children(), "a sandbox's helper was left unreaped"


async def test_a_gated_pool_starts_its_next_sandbox_only_once_the_gate_opens() -> None:
    """The runner's interpreter pool refills only while a core is spare (fewer runs
    under way than cores): while the gate is shut, a used sandbox is not replaced."""
    runs = SlotPool(2, None)
    gate_waits: list[int] = []

    async def gate() -> None:
        gate_waits.append(runs.running)
        await runs.until_fewer_running(1)

    async with started_pool(1, 62290, "warmgate", refill_gate=gate) as pool:
        taken = await take_started(pool)
        async with runs.acquire():  # a run under way: no spare core here
            result = await taken.run("print('ran')", (), b"", None)
            for _ in range(500):  # until the keeper is at the gate for the next one
                if len(gate_waits) == 2:
                    break
                await asyncio.sleep(0.01)
            assert gate_waits == [0, 1], "the keeper did not wait at the gate"
            assert pool.take() is None
        next_one = await take_started(pool)  # the run ended: the gate opened
        assert result.stdout == b"ran\n" and next_one is not taken


async def test_a_delayed_refill_waits_until_a_run_finds_none_ready() -> None:
    """The compiler's pool leaves the cores to the rest of a request's path after its
    reply: the used sandbox's clean-up and the next start wait (here far longer than
    the test), until a compile finds no sandbox ready: then they go ahead at once."""
    async with started_pool(1, 62280, "warmdelay", refill_delay_s=600) as pool:
        taken = await take_started(pool)
        result = await taken.run("print('ran')", (), b"", None)
        await asyncio.sleep(0.3)
        assert result.stdout == b"ran\n"
        assert not pool._ready and taken.directory.exists(), "the refill did not wait"
        assert pool.take() is None  # a compile finds none ready: the wait ends
        next_one = await take_started(pool)
        assert next_one is not taken and not taken.directory.exists()


def processes_of(uid: int, name: str) -> list[int]:
    """Host pids of processes called `name` running as `uid`."""
    return [
        pid
        for pid, fields in host_processes().items()
        if fields["Name"] == name and int(fields["Uid"].split()[0]) == uid
    ]


@contextlib.asynccontextmanager
async def started_pool(
    size: int,
    uid_base: int,
    service: str,
    refill_gate: Callable[[], Awaitable[None]] | None = None,
    refill_delay_s: float = 0.0,
) -> AsyncIterator[WarmPool]:
    """A started pool of `size` warm sandboxes on slots of its own; closed at the end."""
    slots = await open_slot_pool(
        "strict", size=size, uid_base=uid_base, disk_bytes=64 * MiB, max_queued=None,
        service=service,
    )  # fmt: skip
    pool = WarmPool(spec(), slots, size, refill_gate=refill_gate, refill_delay_s=refill_delay_s)
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


def zombie_children() -> list[int]:
    """Pids of this process's children that have ended and were never reaped."""
    return [
        pid
        for pid, fields in host_processes().items()
        if fields["State"].startswith("Z") and int(fields["PPid"]) == os.getpid()
    ]


async def take_started(pool: WarmPool) -> WarmSandbox:
    for _ in range(500):
        taken = pool.take()
        if taken is not None:
            return taken
        await asyncio.sleep(0.01)
    raise TimeoutError("no warm sandbox was started")


def test_only_python_runs_of_their_source_are_warmed() -> None:
    assert warm_argv(("python3", "-u", "main.py"), "main.py") == ["python3", "-u", "-c", LOADER]
    assert warm_argv(("node", "main.js"), "main.js") is None
    assert warm_argv(("./main",), "main.c") is None
    assert handover("main.py", "print(1)", ["a"]) == b"0000000018main.py\0print(1)\0a"
    assert handover("main.py", "print('\0')", []) is None
