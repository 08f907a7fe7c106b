"""The Python zygote: a run forked from a pre-initialised interpreter behaves as a cold
run does, every layer on, shares nothing with the runs before it, and the zygote
survives whatever a run does.

Each comparison runs the same program both ways, on slots of a pool of its own; every
zygote run is checked to have been one (`SandboxResult.zygote`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.helper import helper_library
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR
from dcodex.shared.sandbox.pidfds import kill_listed
from dcodex.shared.sandbox.run import LiveInput, OutputCallback, SandboxResult, run_sandboxed
from dcodex.shared.sandbox.slots import SlotPool, open_slot_pool
from dcodex.shared.sandbox.warm import WarmPool, WarmSandbox
from dcodex.shared.sandbox.workspace import hand_over, workspace, write_file
from dcodex.shared.sandbox.zygote import ZygoteKeeper
from tests.conftest import dcodex_argv, pid_alive
from tests.test_sandbox import gone_soon, is_alive
from tests.test_sandbox_hardening import helpers_of
from tests.test_sandbox_security import processes_mentioning
from tests.test_sandbox_warm import ENDINGS, FINALISATION, LEFT_QUICKLY, PROBE, SHADOWING
from tests.test_sandbox_warm import spec as warm_spec

# Sandboxes on slots of their own: a uid per slot and its cgroups need root.
pytestmark = pytest.mark.root

MiB = 2**20
LIMITS = EffectiveLimits(
    cpu_time_s=1.0,
    wall_time_s=3.0,
    memory_bytes=256 * MiB,
    output_bytes=64 * 1024,
    processes=16,
    file_size_bytes=1 * MiB,
)
PYTHON = "/usr/bin/python3"
RUN = ("python3", "-u", "main.py")
ENV = clean_env(Path(SANDBOX_WORKDIR))
MODES = ["cold", "zygote"]


@pytest.fixture
async def pool() -> AsyncIterator[SlotPool]:
    slots = await open_slot_pool(
        "strict", size=4, uid_base=63600, disk_bytes=64 * MiB, max_queued=None, service="zygtest"
    )
    try:
        yield slots
    finally:
        slots.close()


@pytest.fixture
def keeper() -> Iterator[ZygoteKeeper]:
    zygotes = ZygoteKeeper((PYTHON, "-u"), ENV)
    zygotes.start()
    try:
        yield zygotes
    finally:
        zygotes.close()


async def ready(keeper: ZygoteKeeper, timeout: float = 10.0) -> int:
    """The pid of the keeper's zygote, once it serves."""
    deadline = time.monotonic() + timeout
    while (zygote := keeper.zygote()) is None:
        assert time.monotonic() < deadline, "the zygote did not become ready"
        await asyncio.sleep(0.02)
    return zygote.process.pid


async def run(
    slots: SlotPool,
    code: str,
    zygote: ZygoteKeeper | None,
    *,
    stdin: bytes | LiveInput = b"",
    args: tuple[str, ...] = (),
    limits: EffectiveLimits = LIMITS,
    run: tuple[str, ...] = RUN,
    on_output: OutputCallback | None = None,
) -> SandboxResult:
    if zygote is not None:
        await ready(zygote)
    async with slots.acquire() as slot:
        with workspace(prefix="dcodex-test-") as cwd:
            write_file(cwd, "main.py", textwrap.dedent(code).encode(), slot, mode=0o400)
            hand_over(cwd, slot)
            argv = [*run, *args]
            result = await run_sandboxed(argv, cwd=cwd, limits=limits, stdin=stdin, env=ENV,
                                         slot=slot, zygote=zygote, on_output=on_output)  # fmt: skip
    assert result.zygote == (zygote is not None)
    return result


async def both(
    slots: SlotPool, keeper: ZygoteKeeper, code: str, **options: object
) -> tuple[SandboxResult, SandboxResult]:
    cold = await run(slots, code, None, **options)  # type: ignore[arg-type]
    forked = await run(slots, code, keeper, **options)  # type: ignore[arg-type]
    return cold, forked


def _without_slot(text: str) -> list[str]:
    """The probe's lines but those naming the slot (uid and cgroup)."""
    return [line for line in text.splitlines() if not re.match(r"(\d+:|636\d\d )", line)]


def mode_keeper(mode: str, keeper: ZygoteKeeper) -> ZygoteKeeper | None:
    return keeper if mode == "zygote" else None


# --- the same run, cold or forked ------------------------------------------------------


async def test_a_zygote_run_sees_what_a_cold_run_sees_every_layer_on(
    pool: SlotPool, keeper: ZygoteKeeper
) -> None:
    stdin, args = b"the input\nof the run", ("one", "two words")
    cold, forked = await both(pool, keeper, PROBE, stdin=stdin, args=args)
    assert cold.exit_code == 0, cold.stderr
    assert forked.exit_code == 0, forked.stderr
    forked_lines = forked.stdout.decode()
    assert _without_slot(cold.stdout.decode()) == _without_slot(forked_lines)
    assert "['main.py', 'one', 'two words'] __main__ /box/main.py /box /box" in forked_lines
    assert "network: none" in forked_lines and "the input\nof the run" in forked_lines
    assert "\n1\n" in forked_lines  # NoNewPrivs
    assert " 2 [" in forked_lines  # pid 2 of a pid namespace of its own (the reaper is 1)


# What of the interpreter a program can look at: the same cold and forked.
INTERPRETER_PROBE = """
    import gc, os, signal, sys
    print(sorted(sys.modules))
    print(sorted(sys.path_importer_cache), sys.path)
    print(list(globals()), __loader__.name, __loader__.path, __spec__, __package__)
    print(sys.argv, sys.orig_argv, sys.flags, sys.executable)
    print([(int(s), signal.getsignal(s)) for s in signal.valid_signals() if s not in (
        signal.SIGKILL, signal.SIGSTOP)])
    print(sorted(os.listdir("/proc/self/fd")), os.get_inheritable(0), os.get_inheritable(1))
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    print({key: status[key].split() for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs",
           "Seccomp", "SigBlk", "SigIgn")})
    print(gc.isenabled(), gc.get_threshold(), os.umask(0o22), sys.getrecursionlimit())
    print(sys.stdin.line_buffering, sys.stdout.line_buffering, sys.stdout.write_through,
          sys.stdin.encoding, sys.stdout.encoding, sys.stderr.errors)
    print(open("/proc/self/oom_score_adj").read(), os.getpgrp() == os.getpid(), os.getsid(0))
    print(sys.excepthook, sys.displayhook, sys.breakpointhook, sys.getswitchinterval())
    print(open("/proc/self/cmdline").read().split(chr(0)))
"""


async def test_the_interpreter_is_as_a_cold_start_leaves_it(
    pool: SlotPool, keeper: ZygoteKeeper
) -> None:
    cold, forked = await both(pool, keeper, INTERPRETER_PROBE)
    assert cold.exit_code == 0, cold.stderr
    assert forked.stderr == b""
    differing = [
        (cold_line, forked_line)
        for cold_line, forked_line in zip(
            cold.stdout.decode().splitlines(), forked.stdout.decode().splitlines(), strict=True
        )
        if cold_line != forked_line
    ]
    assert differing == []
    assert "ctypes" not in forked.stdout.decode() and "socket" not in forked.stdout.decode()


PROGRAMS = {
    "traceback": """
        def inner(x):
            return 1 / x
        def outer():
            return inner(0)
        print("before")
        outer()
    """,
    "syntax-error": "print('a')\nif True\n    pass\n",
    "indentation-error": "def f():\nreturn 1\n",
    "exit-code": "import sys\nprint('out')\nsys.exit(3)\n",
    "exit-message": "import sys\nsys.exit('bye')\n",
    "keyboard-interrupt": "raise KeyboardInterrupt\n",
    "uncaught-custom": "class Oops(Exception):\n    pass\nraise Oops('with a message')\n",
    "chained": "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('v') from e\n",
    "stdin-and-args": "import sys\nprint(sys.stdin.read()[::-1], sys.argv)\n",
    "dunders": "print(__name__, __file__, __doc__, __builtins__.__name__)\nimport __main__\n"
    "print(__main__ is __import__('sys').modules['__main__'])\n",
    "docstring": '"""The doc."""\nprint(__doc__)\n',
    "unicode": "print('héllo ✓ 世界')\nimport sys\nprint(sys.stdout.encoding)\n",
    "atexit-and-del": """
        import atexit
        class Last:
            def __del__(self):
                print("deleted at exit")
        keep = Last()
        atexit.register(print, "atexit ran")
        f = open("/tmp/unflushed", "w")
        f.write("buffered")
        print("main done")
    """,
    "warnings": "import warnings\nwarnings.warn('careful')\nprint('after')\n",
    "recursion": "def f(n):\n    return f(n + 1)\nf(0)\n",
    "recursion-depth": "import sys\nn = 0\ndef f():\n    global n\n    n += 1\n    f()\n"
    "try:\n    f()\nexcept RecursionError:\n    print(n, sys.getrecursionlimit())\n",
    "coding-cookie": "# -*- coding: latin-1 -*-\nprint(len('\xe9'))\n",
    "threads": "import threading\nt = threading.Thread(target=print, args=('from a thread',))\n"
    "t.start()\n",
    "signal-alarm": "import signal, time\nsignal.alarm(1)\ntime.sleep(2)\nprint('not reached')\n",
    **{f"shadowing {name}": code for name, code in SHADOWING.items()},
    # Near the memory limit at its end: nothing of ours may fail for want of memory.
    "memory-full": """
        import atexit
        atexit.register(print, "bye")
        hog = []
        try:
            while True:
                hog.append([None] * 10000)
        except MemoryError:
            pass
        del hog[-10:]
        print("filled")
    """,
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
async def test_output_and_exit_are_those_of_a_cold_run(
    pool: SlotPool, keeper: ZygoteKeeper, name: str
) -> None:
    code = PROGRAMS[name]
    options = {"stdin": b"olleh", "args": ("a", "b c")}
    cold, forked = await both(pool, keeper, code, **options)
    assert (forked.stdout, forked.stderr) == (cold.stdout, cold.stderr)
    assert (forked.exit_code, forked.signal) == (cold.exit_code, cold.signal)
    assert cold.stdout or cold.stderr or cold.signal  # every program shows something


@pytest.mark.parametrize("code", ENDINGS.values(), ids=ENDINGS.keys())
async def test_a_program_ends_as_in_a_cold_run(
    pool: SlotPool, keeper: ZygoteKeeper, code: str
) -> None:
    """What is left to run at a program's end (a finaliser, an atexit function, a
    thread, a buffer...) runs, as in a cold run, whether or not the quick exit is taken."""
    cold, forked = await both(pool, keeper, code)
    assert (forked.stdout, forked.stderr) == (cold.stdout, cold.stderr)
    assert forked.exit_code == cold.exit_code


async def test_the_interpreter_is_finalised_only_when_that_shows_something(
    pool: SlotPool,
) -> None:
    """`python3 -v` says when it finalises (its `# cleanup` lines): a zygote started
    with it, after the same programs as a warm interpreter (test_sandbox_warm)."""
    verbose = (PYTHON, "-v", "-u")
    keeper = ZygoteKeeper(verbose, ENV)
    keeper.start()
    try:
        for name, code in FINALISATION.items():
            result = await run(pool, code, keeper, run=("python3", "-v", "-u", "main.py"))
            assert (b"# cleanup" in result.stderr) == (name not in LEFT_QUICKLY), name
    finally:
        keeper.close()


# --- nothing shared between runs -------------------------------------------------------


async def test_nothing_a_run_leaves_is_there_for_the_next(
    pool: SlotPool, keeper: ZygoteKeeper
) -> None:
    token = f"zygote-leftover-{uuid.uuid4().hex}"
    first = await run(
        pool,
        f"""
        import builtins, os, sys, subprocess
        open("/box/left", "w").write("x")
        open("/tmp/left", "w").write("x")
        builtins.leaked = 1
        os.leaked = 1
        sys.modules["json"] = "poisoned"
        sys.path.insert(0, "/tmp")
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "30", "{token}"])
            os._exit(0)
        os.wait()
        print("left")
        """,
        keeper,
    )
    assert (first.exit_code, first.stdout) == (0, b"left\n"), first.stderr
    # The daemon died with the run's namespace, before the run was over.
    assert processes_mentioning(token) == []
    second = await run(
        pool,
        """
        import builtins, os, sys
        print(os.path.exists("/box/left"), os.path.exists("/tmp/left"), sorted(os.listdir("/tmp")))
        print(hasattr(builtins, "leaked"), hasattr(os, "leaked"), "json" in sys.modules)
        import json
        print(json.dumps([1]), sys.path[0])
        print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        """,
        keeper,
    )
    assert second.exit_code == 0, second.stderr
    assert second.stdout.decode().splitlines() == [
        "False False []",
        "False False False",
        "[1] /box",
        "[1, 2]",  # the reaper and the program: nothing of the run before
    ]


ATTACKS_ON_THE_ZYGOTE = {
    "kill-everything": "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('alive')\n",
    "kill-the-parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
    "os.kill(1, signal.SIGKILL)\nprint('alive')\n",
    "fork-bomb": """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """,
    "memory-bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))\n",
}


@pytest.mark.parametrize("name", sorted(ATTACKS_ON_THE_ZYGOTE))
async def test_the_zygote_survives_a_run_and_keeps_serving(
    pool: SlotPool, keeper: ZygoteKeeper, name: str
) -> None:
    pid = await ready(keeper)
    await run(pool, ATTACKS_ON_THE_ZYGOTE[name], keeper)
    assert keeper.zygote() is not None and await ready(keeper) == pid
    after = await run(pool, "print(sum(range(10)))", keeper)
    assert (after.exit_code, after.stdout) == (0, b"45\n")


async def test_a_dead_zygote_is_replaced_and_its_runs_end(
    pool: SlotPool, keeper: ZygoteKeeper
) -> None:
    pid = await ready(keeper)
    sleeper = asyncio.create_task(run(pool, "import time\ntime.sleep(30)\n", keeper))
    await asyncio.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    # Its helpers die with it (parent-death signal): the run in flight ends at once.
    ended = await asyncio.wait_for(sleeper, 5)
    assert ended.exit_code != 0 and ended.wall_time_ms < 5000
    meanwhile = await run(pool, "print('cold')", None)  # runs go on, the cold way
    assert meanwhile.stdout == b"cold\n"
    assert await ready(keeper) != pid
    after = await run(pool, "print('forked')", keeper)
    assert after.stdout == b"forked\n"


# A zygote's stand-in: it starts one run through the library as the zygote does, says
# its reaper's pid and kills itself at once, on one CPU, so that it often dies before its
# reaper has set its parent-death signal (found in review: such a reaper ran on).
DYING_ZYGOTE = """
import ctypes, os, signal, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
start = ctypes.PyDLL(sys.argv[1]).dcodex_start
start.argtypes = [ctypes.c_int] * 6
options = os.memfd_create("options")
os.write(options, b"\\0".join([b"--status-fd", b"3", b"--namespaces", b"--workdir",
    sys.argv[2].encode(), b"--wall-ms", b"20000", b"--", b"/usr/bin/python3"]) + b"\\0")
os.lseek(options, 0, 0)
stdin, _keep = os.pipe()
output = os.open(sys.argv[3], os.O_WRONLY)
pid = start(stdin, output, output, output, options, 0)
if pid == 0:  # the program: it would run on for its 20 s
    while True:
        os.write(1, b"alive\\n")
        signal.sigtimedwait([], 0.05)
print(pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_run_ends_with_a_zygote_that_dies_as_it_starts_it(tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.touch()
    for attempt in range(8):
        workdir = tmp_path / f"box-{attempt}"
        workdir.mkdir()
        done = subprocess.run(
            [PYTHON, "-c", DYING_ZYGOTE, helper_library(), str(workdir), str(output)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr
        reaper = int(done.stdout)
        deadline = time.monotonic() + 2
        while is_alive(reaper) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not is_alive(reaper), (attempt, output.read_text()[-200:])


async def serving_with_forks_left(keeper: ZygoteKeeper, timeout: float = 10.0) -> int:
    """The pid of the zygote that serves next, once it is one with forks left (an old
    one serves on while its replacement starts)."""
    deadline = time.monotonic() + timeout
    while (zygote := keeper.zygote()) is None or zygote.forks >= keeper.max_forks:
        assert time.monotonic() < deadline, "no zygote with forks left became ready"
        await asyncio.sleep(0.02)
    return zygote.process.pid


async def test_a_zygote_is_replaced_after_its_forks(pool: SlotPool) -> None:
    keeper = ZygoteKeeper((PYTHON, "-u"), ENV, max_forks=2)
    keeper.start()
    try:
        first = await ready(keeper)
        pids = set()
        for number in range(6):
            result = await run(pool, f"print({number})", keeper)
            assert result.stdout == f"{number}\n".encode()
            pids.add(await serving_with_forks_left(keeper))
        assert keeper.starts >= 3 and len(pids | {first}) >= 3
        # The first, retired, has gone once its runs were over.
        deadline = time.monotonic() + 5
        while pid_alive(first) and time.monotonic() < deadline:
            keeper.zygote()  # which also reaps those retired
            await asyncio.sleep(0.05)
        assert not pid_alive(first)
    finally:
        keeper.close()


# --- every layer on ----------------------------------------------------------------------

ESCAPES = {
    "read-shadow": "print(open('/etc/shadow').read())",
    "host-root-files": "import os\nprint(os.path.exists('/root'), os.path.exists('/home'),"
    " os.path.exists('/var'), sorted(os.listdir('/')))",
    "network": "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
    "except OSError as e:\n    print('refused', e.errno)\n",
    "mount": "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())",
    "unshare": "import os\ntry:\n    os.unshare(os.CLONE_NEWUSER)\nexcept OSError as e:\n"
    "    print('unshare', e.errno)\n",
    "ptrace": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "print(libc.ptrace(16, 1, 0, 0), ctypes.get_errno())",
    "keyring": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "print(libc.syscall(250, 0, 0, 0, 0), ctypes.get_errno())",
    "host-proc": "import os\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()),"
    " open('/proc/1/cmdline').read().count('/box'), os.getuid() != 0)",
    "setuid-root": "import os\ntry:\n    os.setuid(0)\nexcept OSError as e:\n"
    "    print('setuid', e.errno)\n",
    "other-uids-files": "import os\n"
    "print([os.access(p, os.R_OK) for p in ('/etc/ssh', '/proc/1/environ')])",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
async def test_escapes_fail_as_they_do_in_a_cold_run(
    pool: SlotPool, keeper: ZygoteKeeper, name: str
) -> None:
    pid = await ready(keeper)
    cold, forked = await both(pool, keeper, ESCAPES[name])
    assert (forked.stdout, forked.exit_code) == (cold.stdout, cold.exit_code), forked.stderr
    assert b"root:" not in forked.stdout
    assert await ready(keeper) == pid  # and the zygote is still serving


async def test_no_host_path_shows_in_a_zygote_run(pool: SlotPool, keeper: ZygoteKeeper) -> None:
    result = await run(
        pool,
        """
        import os
        for name in ("/proc/self/maps", "/proc/1/cmdline", "/proc/self/cmdline",
                     "/proc/self/environ", "/proc/1/maps"):
            try:
                print(open(name).read())
            except OSError as e:
                print(name, e.errno)
        """,
        keeper,
    )
    assert result.exit_code == 0, result.stderr
    text = result.stdout.decode()
    cache = str(Path(helper_library()).parent)
    for host_path in (cache, str(Path.home()), "dcodex-test-", "/tmp/"):
        assert host_path not in text
    assert "/memfd:dcodex-zygote" in text  # the helper's code: mapped from memory


@pytest.mark.parametrize("mode", MODES)
async def test_limits_hold(pool: SlotPool, keeper: ZygoteKeeper, mode: str) -> None:
    zygote = mode_keeper(mode, keeper)
    cpu = await run(pool, "while True:\n    pass\n", zygote)
    assert cpu.killed_for == "cpu_time" or cpu.signal in (signal.SIGXCPU, signal.SIGKILL)
    assert 700 <= cpu.cpu_time_ms < 2500  # about the limit (the kernel counts in ticks)
    wall = await run(pool, "import time\ntime.sleep(10)\n", zygote)
    assert wall.wall_clock_timeout and wall.wall_time_ms < 4500
    memory = await run(pool, "x = bytearray(512 * 2**20)\nprint('got it')\n", zygote)
    assert memory.exit_code == 1 and b"MemoryError" in memory.stderr
    output = await run(pool, "while True:\n    print('x' * 1000)\n", zygote)
    assert output.output_truncated and len(output.stdout) <= LIMITS.output_bytes
    processes = await run(
        pool,
        """
        import os, time
        made = 0
        try:
            for _ in range(100):
                if os.fork() == 0:
                    time.sleep(5)
                    os._exit(0)
                made += 1
        except OSError:
            pass
        print(made)
        """,
        zygote,
    )
    assert int(processes.stdout) < LIMITS.processes
    files = await run(pool, "open('/box/big', 'wb').write(b'x' * 2 * 2**20)\n", zygote)
    assert files.exit_code != 0  # past RLIMIT_FSIZE: SIGXFSZ is ignored, the write fails


# --- warm sandboxes, forked from the zygote ----------------------------------------------


@pytest.mark.parametrize("name", ["traceback", "syntax-error", "stdin-and-args", "dunders"])
async def test_a_warm_sandbox_forked_from_the_zygote_answers_as_a_cold_run(
    pool: SlotPool, keeper: ZygoteKeeper, name: str
) -> None:
    code, stdin, args = textwrap.dedent(PROGRAMS[name]), b"olleh", ("a", "b c")
    cold = await run(pool, code, None, stdin=stdin, args=args)
    await ready(keeper)
    async with pool.acquire() as slot:
        sandbox = WarmSandbox(warm_spec(), slot, keeper)
        await asyncio.sleep(0.2)  # it waits for its run, forked already
        assert sandbox.alive
        warm = await sandbox.run(code, args, stdin, None)
        await sandbox.settle()
    assert warm.zygote
    assert (warm.stdout, warm.stderr, warm.exit_code) == (cold.stdout, cold.stderr, cold.exit_code)


async def test_a_warm_pool_refills_from_the_zygote(pool: SlotPool, keeper: ZygoteKeeper) -> None:
    await ready(keeper)
    warm_pool = WarmPool(warm_spec(), pool, 1, zygote=keeper)
    warm_pool.start()
    try:
        for number in range(3):
            deadline = time.monotonic() + 5
            while (sandbox := warm_pool.take()) is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            result = await sandbox.run(f"print({number})", (), b"", None)
            assert (result.stdout, result.zygote) == (f"{number}\n".encode(), True)
    finally:
        warm_pool.close()


def test_the_zygote_benchmark_runs_forked_and_cold_runs_several_at_once() -> None:
    """`dcodex bench zygote --workers N`: both ways, each run checked, a row each with
    its rate and the supervisor's share (figures printed, never asserted)."""
    argv = ["-n", "6", "--rounds", "1", "--workers", "3", "--uid", "62400"]
    done = subprocess.run(
        dcodex_argv("bench", "zygote", *argv),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    assert "6 runs each way per round, 3 at once" in done.stdout
    assert "runs/s" in done.stdout and "supervisor ms" in done.stdout
    row = re.compile(r"│\s+1 │\s+(zygote|cold) │")
    assert len([line for line in done.stdout.splitlines() if row.search(line)]) == 2, done.stdout


# --- a run's pid, taken by someone else's process before the runner notices its end ----


def children_of(parents: list[int]) -> list[int]:
    """The processes whose parent is one of `parents`."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) in parents:
                found.append(int(entry.name))
    return found


def hold_the_loop_until_reaped(pid: int) -> None:
    """Block (the event loop with us) until `pid` has been reaped: the runner's loop
    notices nothing meanwhile."""
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.01)


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


def process_with_pid(pid: int) -> subprocess.Popen[bytes]:
    """A process of ours (`sleep`) that has `pid`, freed a moment ago: the kernel's next pid
    set just below it (ns_last_pid, root), tried again should another process take it."""
    for _attempt in range(200):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        # Leading a group of its own, as a pid reused as a process group's id would.
        process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        if process.pid == pid:
            return process
        process.kill()
        process.wait()
    raise AssertionError(f"pid {pid} could not be taken")


@pytest.mark.parametrize("mode", ["plain", *MODES])
async def test_the_runners_signals_never_reach_a_process_that_took_the_runs_pid(
    pool: SlotPool, keeper: ZygoteKeeper, mode: str
) -> None:
    """The runner learns that a run ended from a report it reads when its loop gets to
    it. Meanwhile the run's process may have been reaped and its pid taken by another
    tenant's process: a stop asked for then (the user's signal, a limit) must reach no
    one. Here the loop is held while that happens, then the user signals the run."""
    zygote_pid = await ready(keeper)
    started = asyncio.Event()
    live = LiveInput()
    code = "import time\nprint('started', flush=True)\ntime.sleep(0.2)\n"
    on_output: OutputCallback = lambda _stream, _data: started.set()  # noqa: E731
    if mode == "plain":  # no namespaces: the pid is the program's and its group's
        runs = run_sandboxed([PYTHON, "-c", code], cwd=Path("/"), limits=LIMITS, stdin=live,
                             on_output=on_output)  # fmt: skip
    else:
        runs = run(pool, code, mode_keeper(mode, keeper), stdin=live, on_output=on_output)
    running = asyncio.create_task(runs)
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.05)  # the "pid" report read
    # The helper's child (a cold run's reaper, or without namespaces the program), or
    # the zygote's (its run's reaper); the session's own services have theirs.
    parents = [zygote_pid] if mode == "zygote" else helpers_of(os.getpid())
    (process,) = children_of(parents)
    hold_the_loop_until_reaped(process)
    other_tenants = process_with_pid(process)
    try:
        for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGKILL):
            live.signal(signum)
        result = await running
        assert (result.exit_code, result.stdout) == (0, b"started\n")
        reached = await gone_soon(other_tenants.pid, within_s=0.5)
        assert not reached, "a signal for the run reached another process"
        assert (await run(pool, "print('next')", mode_keeper(mode, keeper))).stdout == b"next\n"
    finally:
        other_tenants.kill()
        other_tenants.wait()


async def test_clearing_a_slots_cgroup_kills_no_process_that_took_a_members_pid(
    pool: SlotPool,
) -> None:
    """After each run the runner kills what is left in the slot's cgroup, by its list of
    members. A member may end, be reaped and its pid be taken by another process between
    that list and the kill: the other process is spared, a member still there is not."""
    async with pool.acquire() as slot:
        assert slot.cgroup is not None
        leaving, staying = sleeper(), sleeper()
        for path in slot.cgroup.paths:
            for member in (leaving, staying):
                (Path(path) / "cgroup.procs").write_text(str(member.pid))
        other_tenants: list[subprocess.Popen[bytes]] = []

        def members_then_one_leaves() -> list[int]:
            listed = slot.cgroup.processes() if slot.cgroup else []
            if not other_tenants:
                leaving.kill()
                leaving.wait()
                other_tenants.append(process_with_pid(leaving.pid))
            return listed

        try:
            listed = kill_listed(members_then_one_leaves)
            assert sorted(listed) == sorted([leaving.pid, staying.pid])
            assert await gone_soon(staying.pid), "a member still in the cgroup lives on"
            reached = await gone_soon(other_tenants[0].pid, within_s=0.5)
            assert not reached, "the kill reached a process outside the cgroup"
        finally:
            for process in (staying, *other_tenants):
                process.kill()
                process.wait()
