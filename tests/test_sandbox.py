"""run_sandboxed against real programs: Python one-liners and small C programs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.services.runner.verdict import decide_status
from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.run import OutputCallback, SandboxResult, run_sandboxed
from dcodex.shared.sandbox.slot import Slot

MiB = 2**20
LIMITS = EffectiveLimits(
    cpu_time_s=1.0,
    wall_time_s=2.0,
    memory_bytes=256 * MiB,
    output_bytes=1024,
    processes=5,
    file_size_bytes=4096,
)
NOBODY = 65534
SYSTEM_PYTHON = Path("/usr/bin/python3")  # the test venv may not be readable by nobody


async def run_py(
    code: str,
    cwd: Path,
    limits: EffectiveLimits = LIMITS,
    *,
    stdin: bytes = b"",
    on_output: OutputCallback | None = None,
) -> SandboxResult:
    argv = [sys.executable, "-c", code]
    return await run_sandboxed(argv, cwd=cwd, limits=limits, stdin=stdin, on_output=on_output)


def compile_c(tmp_path: Path, source: str) -> Path:
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc is a requirement of DCodeX (the compiler service uses it)"
    src, exe = tmp_path / "prog.c", tmp_path / "prog"
    src.write_text(source)
    subprocess.run([gcc, "-O0", "-o", str(exe), str(src)], check=True)
    return exe


def is_alive(pid: int) -> bool:
    """os.kill(pid, 0), but a zombie waiting for init to reap it counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone_soon(pid: int, within_s: float = 1.0) -> bool:
    # SIGKILL is delivered asynchronously: give the kernel a moment.
    deadline = time.monotonic() + within_s
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A root-owned 0755 directory outside pytest's 0700 tmp tree, so nobody can enter it."""
    assert os.geteuid() == 0, "tests that switch uid are marked root"
    assert SYSTEM_PYTHON.exists(), "scripts/system-deps.sh installs the system python3"
    path = Path(tempfile.mkdtemp(prefix="dcodex-sandbox-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- exits ------------------------------------------------------------------------------


async def test_hello_world(tmp_path: Path) -> None:
    result = await run_py("print('hello, world')", tmp_path)
    assert result.stdout == b"hello, world\n"
    assert result.stderr == b""
    assert (result.exit_code, result.signal, result.killed_for) == (0, None, None)
    assert result.peak_memory_bytes > 0
    assert decide_status(result, LIMITS) == "ok"


async def test_stdin_is_echoed(tmp_path: Path) -> None:
    # Bigger than a pipe buffer both ways: writing and reading must interleave.
    data = os.urandom(300_000)
    limits = LIMITS.model_copy(update=dict(output_bytes=1 * MiB))
    code = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
    result = await run_py(code, tmp_path, limits, stdin=data)
    assert result.stdout == data
    assert decide_status(result, limits) == "ok"


async def test_unread_stdin_does_not_hang(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await run_py("print('ignoring stdin')", tmp_path, stdin=b"x" * (4 * MiB))
    assert result.exit_code == 0
    assert time.monotonic() - started < 1.0


async def test_exit_code(tmp_path: Path) -> None:
    result = await run_py("import sys; sys.exit(3)", tmp_path)
    assert (result.exit_code, result.signal) == (3, None)
    assert decide_status(result, LIMITS) == "runtime_error"


async def test_killed_by_signal(tmp_path: Path) -> None:
    result = await run_py("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", tmp_path)
    assert (result.exit_code, result.signal) == (None, signal.SIGSEGV)
    assert decide_status(result, LIMITS) == "signaled"


async def test_missing_program_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run_sandboxed([str(tmp_path / "nope")], cwd=tmp_path, limits=LIMITS)


# --- limits -----------------------------------------------------------------------------


async def test_cpu_time_limit(tmp_path: Path) -> None:
    # A roomy wall clock, so that a busy machine cannot turn this into a wall-time kill.
    limits = LIMITS.model_copy(update=dict(wall_time_s=10.0))
    result = await run_py("while True: pass", tmp_path, limits)
    assert result.signal == signal.SIGXCPU
    assert result.cpu_time_ms >= 900
    assert not result.wall_clock_timeout
    assert decide_status(result, limits) == "cpu_time_limit"


async def test_fractional_cpu_limit_is_enforced_not_rounded_up(tmp_path: Path) -> None:
    """RLIMIT_CPU counts whole seconds; a 0.3 s limit must not let a loop burn 1 s."""
    limits = LIMITS.model_copy(update=dict(cpu_time_s=0.3, wall_time_s=10.0))
    result = await run_py("while True: pass", tmp_path, limits)
    assert result.killed_for == "cpu_time"
    assert 300 <= result.cpu_time_ms < 700
    assert decide_status(result, limits) == "cpu_time_limit"


async def test_wall_time_limit(tmp_path: Path) -> None:
    limits = LIMITS.model_copy(update=dict(wall_time_s=0.5))
    result = await run_py("import time; time.sleep(10)", tmp_path, limits)
    assert result.wall_clock_timeout
    assert result.killed_for == "wall_time"
    assert result.signal == signal.SIGKILL
    assert 450 <= result.wall_time_ms <= 1000
    assert decide_status(result, limits) == "wall_time_limit"


async def test_output_flood_is_capped(tmp_path: Path) -> None:
    code = (
        "import sys\nwhile True:\n    sys.stdout.write('o' * 100)\n    sys.stderr.write('e' * 100)"
    )
    started = time.monotonic()
    result = await run_py(code, tmp_path)
    assert time.monotonic() - started < 1.0
    assert result.output_truncated
    assert result.killed_for == "output"
    assert len(result.stdout) + len(result.stderr) == LIMITS.output_bytes
    assert set(result.stdout) <= {ord("o")} and set(result.stderr) <= {ord("e")}
    assert decide_status(result, LIMITS) == "output_limit"


async def test_output_over_cap_at_exit_is_still_capped(tmp_path: Path) -> None:
    # The program is gone before we read: the cap applies to what was left in the pipe.
    result = await run_py("print('x' * 5000)", tmp_path)
    assert result.stdout == b"x" * LIMITS.output_bytes
    assert result.output_truncated
    assert decide_status(result, LIMITS) == "output_limit"


async def test_output_exactly_at_cap_is_not_truncated(tmp_path: Path) -> None:
    result = await run_py(f"print('x' * {LIMITS.output_bytes - 1})", tmp_path)
    assert len(result.stdout) == LIMITS.output_bytes
    assert not result.output_truncated
    assert decide_status(result, LIMITS) == "ok"


MALLOC_UNTIL_FAILURE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    size_t chunk = 16u << 20;
    for (;;) {
        char *p = malloc(chunk);
        if (p == NULL) { perror("malloc"); return 1; }
        memset(p, 1, chunk);
    }
}
"""


async def test_c_memory_limit(tmp_path: Path) -> None:
    exe = compile_c(tmp_path, MALLOC_UNTIL_FAILURE)
    limits = LIMITS.model_copy(update=dict(memory_bytes=64 * MiB))
    result = await run_sandboxed([str(exe)], cwd=tmp_path, limits=limits)
    assert result.exit_code == 1
    assert b"Cannot allocate memory" in result.stderr
    assert decide_status(result, limits) == "memory_limit"


async def test_python_memory_limit(tmp_path: Path) -> None:
    result = await run_py("x = bytearray(1 << 40)", tmp_path)
    assert result.exit_code == 1
    assert b"MemoryError" in result.stderr
    assert decide_status(result, LIMITS) == "memory_limit"


WRITE_PAST_FILE_SIZE = r"""
#include <fcntl.h>
#include <unistd.h>
int main(void) {
    char buf[1000] = {0};
    int fd = open("big.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < 100; i++)
        if (write(fd, buf, sizeof buf) < 0) return 2;
    return 0;
}
"""


async def test_file_size_limit(tmp_path: Path) -> None:
    # In C: Python ignores SIGXFSZ and would just fail with EFBIG (a runtime error).
    exe = compile_c(tmp_path, WRITE_PAST_FILE_SIZE)
    result = await run_sandboxed([str(exe)], cwd=tmp_path, limits=LIMITS)
    assert result.signal == signal.SIGXFSZ
    assert (tmp_path / "big.bin").stat().st_size == LIMITS.file_size_bytes
    assert decide_status(result, LIMITS) == "signaled"


# --- isolation --------------------------------------------------------------------------


async def test_environment_is_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DCODEX_LEAK_MARKER", "must-not-leak")
    limits = LIMITS.model_copy(update=dict(output_bytes=64 * 1024))
    result = await run_py("import json, os; print(json.dumps(dict(os.environ)))", tmp_path, limits)
    assert json.loads(result.stdout) == clean_env(tmp_path)


async def test_signals_the_service_ignores_are_not_ignored_by_the_program(
    tmp_path: Path,
) -> None:
    """A service started in the background (SIGINT, SIGQUIT ignored) or under nohup
    (SIGHUP) hands nothing of that to its programs: exec keeps ignored signals."""
    ignored = (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2)
    before = {number: signal.signal(number, signal.SIG_IGN) for number in ignored}
    try:
        code = (
            "import signal; print([signal.getsignal(n) == signal.SIG_DFL for n in"
            f" {[int(n) for n in ignored]}], signal.pthread_sigmask(signal.SIG_BLOCK, []))"
        )
        result = await run_py(code, tmp_path)
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
    assert result.stdout.strip() == b"[True, True, True] set()", result.stderr


async def test_background_child_is_killed(tmp_path: Path) -> None:
    code = (
        "import pathlib, subprocess\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "pathlib.Path('child.pid').write_text(str(child.pid))\n"
    )
    started = time.monotonic()
    result = await run_py(code, tmp_path)
    assert time.monotonic() - started < 1.0
    assert result.exit_code == 0
    assert await gone_soon(int((tmp_path / "child.pid").read_text()))


DOUBLE_FORKED_DAEMON = """
import os, pathlib, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # the daemon: keeps our stdout/stderr open
        pathlib.Path("daemon.tmp").write_text(str(os.getpid()))
        os.rename("daemon.tmp", "daemon.pid")
        time.sleep(30)
    os._exit(0)
os.wait()
while not os.path.exists("daemon.pid"):
    time.sleep(0.01)
"""


async def test_setsid_daemon_does_not_block_the_run(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await run_py(DOUBLE_FORKED_DAEMON, tmp_path)
    elapsed = time.monotonic() - started
    daemon = int((tmp_path / "daemon.pid").read_text())
    # It left the process group, so this layer cannot kill it: that is the caller's job.
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon, signal.SIGKILL)
    assert result.exit_code == 0
    assert elapsed < 1.0


async def test_cancellation_kills_and_reaps(tmp_path: Path) -> None:
    output: asyncio.Queue[bytes] = asyncio.Queue()
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(10)"
    task = asyncio.create_task(
        run_py(code, tmp_path, on_output=lambda _, data: output.put_nowait(data))
    )
    pid = int(await output.get())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # not even a zombie: killed and reaped


async def test_no_fds_leak(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    await run_py("print('x' * 5000)", tmp_path)
    with pytest.raises(FileNotFoundError):
        await run_sandboxed([str(tmp_path / "nope")], cwd=tmp_path, limits=LIMITS)
    task = asyncio.create_task(run_py("import time; time.sleep(10)", tmp_path))
    await asyncio.sleep(0.1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(os.listdir("/proc/self/fd")) == before


PRINT_TOKEN_SLOWLY = """
import sys, time
for _ in range(5):
    print(sys.argv[1], flush=True)
    time.sleep(0.01)
"""


async def test_concurrent_runs_do_not_mix(tmp_path: Path) -> None:
    limits = LIMITS.model_copy(update=dict(wall_time_s=10.0))
    code = PRINT_TOKEN_SLOWLY

    async def one(token: str) -> SandboxResult:
        argv = [sys.executable, "-c", code, token]
        return await run_sandboxed(argv, cwd=tmp_path, limits=limits)

    tokens = [f"token-{i:02d}" for i in range(20)]
    results = await asyncio.gather(*(one(token) for token in tokens))
    for token, result in zip(tokens, results, strict=True):
        assert result.stdout == f"{token}\n".encode() * 5
        assert result.exit_code == 0


async def test_output_is_streamed(tmp_path: Path) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(0.5)\nprint('second', flush=True)"
    chunks: list[tuple[str, bytes, float]] = []
    result = await run_py(
        code, tmp_path, on_output=lambda name, data: chunks.append((name, data, time.monotonic()))
    )
    returned = time.monotonic()
    assert chunks[0][:2] == ("stdout", b"first\n")
    assert returned - chunks[0][2] >= 0.3
    assert b"".join(data for _, data, _ in chunks) == result.stdout == b"first\nsecond\n"


# --- a uid of its own -------------------------------------------------------------------


@pytest.mark.root
async def test_nobody_cannot_write_into_a_root_directory(world_readable_dir: Path) -> None:
    code = "import os; print(os.getuid(), os.getgid(), os.getgroups()); open('x', 'w')"
    result = await run_sandboxed(
        [str(SYSTEM_PYTHON), "-c", code],
        cwd=world_readable_dir,
        limits=LIMITS,
        slot=Slot(0, NOBODY, NOBODY),
    )
    assert result.stdout == b"65534 65534 []\n"
    assert b"PermissionError" in result.stderr
    assert not (world_readable_dir / "x").exists()


FORK_AS_MANY_AS_ALLOWED = """
import os, signal, time
children = []
for _ in range(50):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(10)
        os._exit(0)
    children.append(pid)
print(len(children))
for pid in children:  # reap them ourselves: orphaned zombies would count for uid nobody
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


@pytest.mark.root
async def test_process_limit(world_readable_dir: Path) -> None:
    result = await run_sandboxed(
        [str(SYSTEM_PYTHON), "-c", FORK_AS_MANY_AS_ALLOWED],
        cwd=world_readable_dir,
        limits=LIMITS,
        slot=Slot(0, NOBODY, NOBODY),
    )
    assert result.exit_code == 0, result.stderr
    # The program itself is one of the `processes` allowed.
    forks = int(result.stdout)
    assert 1 <= forks <= LIMITS.processes - 1, "forks are allowed, but only up to the limit"


TOUCH_MEMORY = """
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    size_t size = (size_t)atoi(argv[1]) << 20;
    char *block = malloc(size);
    if (!block) return 1;
    memset(block, 1, size);
    return block[size - 1] == 1 ? 0 : 2;
}
"""


async def test_peak_memory_is_the_programs_own(tmp_path: Path) -> None:
    """The kernel's peak RSS of the program, not of the Python process that started it."""
    exe = compile_c(tmp_path, TOUCH_MEMORY)
    small = await run_sandboxed([str(exe), "1"], cwd=tmp_path, limits=LIMITS)
    large = await run_sandboxed([str(exe), "100"], cwd=tmp_path, limits=LIMITS)
    assert small.exit_code == 0 and large.exit_code == 0
    assert small.peak_memory_bytes < 8 * MiB, "a 1 MiB program must not look like 40 MiB"
    assert 100 * MiB <= large.peak_memory_bytes < 116 * MiB


async def test_programs_cannot_regain_privileges(tmp_path: Path) -> None:
    """no_new_privs is set: setuid binaries do not elevate a sandboxed program."""
    result = await run_py("print(open('/proc/self/status').read())", tmp_path)
    assert "NoNewPrivs:\t1" in result.stdout.decode()
