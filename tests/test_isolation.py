"""The isolation modes, the layers a runner reports, and exact verdicts under them."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from dcodex.services.runner.verdict import decide_status
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.errors import DcodexError
from dcodex.shared.sandbox.helper import helper_binary
from dcodex.shared.sandbox.isolation import NAMESPACE_LAYERS, STRICT_LAYERS, Isolation
from dcodex.shared.sandbox.run import SandboxResult, run_sandboxed
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.slots import SlotPool, open_slot_pool
from dcodex.shared.sandbox.workspace import workspace
from tests.conftest import (
    FORK_UNTIL_REFUSED,
    ServiceProcesses,
    dcodex_argv,
    stop_process,
    wait_for_subject,
)

# Sandboxes on slots of their own: a uid per slot and its cgroups need root.
pytestmark = pytest.mark.root

LIMITS = EffectiveLimits(
    cpu_time_s=2,
    wall_time_s=5,
    memory_bytes=512 * 2**20,
    output_bytes=64 * 1024,
    processes=16,
    file_size_bytes=2**20,
)
# Keeps a root process from making namespaces or mounts, as an unprivileged container.
WITHOUT_SYS_ADMIN = ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]


# --- what a runner reports -------------------------------------------------------------


async def test_languages_and_micro_info_report_every_strict_layer(client: DcodexClient) -> None:
    layers = (await client.languages()).isolation
    assert set(STRICT_LAYERS) <= set(layers), layers
    reply = await client.nc.request("$SRV.INFO.dcodex-runner", b"", timeout=5)
    assert json.loads(reply.data)["metadata"]["isolation"].split(",") == layers


def runner_argv(url: str, prefix: str, *args: str) -> list[str]:
    return dcodex_argv(
        "service", "runner", "--nats-url", url, "--subject-prefix", prefix,
        "--metrics-port", "0", *args,
    )  # fmt: skip


def start_logged(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; stopped by PID at the end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop_process(process)


def test_strict_refuses_to_start_and_names_the_missing_layers(nats_url: str) -> None:
    argv = [*WITHOUT_SYS_ADMIN, *runner_argv(nats_url, "nosys", "--isolation", "strict")]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0
    message = completed.stderr
    assert "--isolation strict needs the layers network, pid, mount" in message, message
    assert "Traceback" not in message


async def test_best_takes_what_the_host_offers_and_says_so(
    nats_url: str, tmp_path: Path, stopper: list[subprocess.Popen[bytes]]
) -> None:
    # A uid range of its own: without namespaces every process of a slot's uid is
    # killed after each run.
    argv = [
        *WITHOUT_SYS_ADMIN,
        *runner_argv(nats_url, "best", "--isolation", "best", "--sandbox-uid-base", "63100"),
    ]
    stopper.append(start_logged(argv, tmp_path / "runner.log"))
    await wait_for_subject(nats_url, "best.languages")
    async with await DcodexClient.connect(nats_url, prefix="best") as client:
        layers = (await client.languages()).isolation
        result = await client.run({"language": "python", "code": "print('still runs')"})
    assert "rlimits" in layers and "uid" in layers
    assert not set(NAMESPACE_LAYERS) & set(layers)
    assert result.stdout == "still runs\n"
    assert "sandbox_isolation" in logged_events(tmp_path / "runner.log")


def logged_events(log: Path) -> list[object]:
    """The events of a service's JSON log lines (other lines, a traceback's, skipped)."""
    lines = log.read_text().splitlines()
    return [json.loads(line).get("event") for line in lines if line.startswith("{")]


# --- the bounded queue -----------------------------------------------------------------


@pytest.fixture
def tiny_runner(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcesses]:
    services = ServiceProcesses(nats_url, tmp_path, ("--subject-prefix", "tiny"))
    services.start("runner", "--max-concurrent-sandboxes", "1", "--max-queued-executions", "1")
    try:
        asyncio.run(wait_for_subject(nats_url, "tiny.languages"))
        yield services
    finally:
        services.stop_all()


async def test_past_the_queue_requests_get_503_overloaded(tiny_runner: ServiceProcesses) -> None:
    finished: list[str] = []
    sleeper = {"language": "python", "code": "import time\ntime.sleep(0.8)\nprint('done')"}

    async def one(name: str) -> str:
        try:
            result = await client.run(sleeper)
            outcome = result.stdout.strip()
        except DcodexError as error:
            outcome = f"{error.code} {error.message}"
        finished.append(name)
        return outcome

    async with await DcodexClient.connect(tiny_runner.url, prefix="tiny") as client:
        running = asyncio.ensure_future(one("running"))
        await asyncio.sleep(0.3)  # the first holds the only sandbox
        queued = asyncio.ensure_future(one("queued"))
        await asyncio.sleep(0.1)
        refused = await one("refused")
        outcomes = [await running, await queued]
    assert refused.startswith("503 overloaded"), refused
    assert outcomes == ["done", "done"], "the running and the queued request are served"
    assert finished[0] == "refused", "the refusal came at once, not after a wait"


# --- exact verdicts and accounting, with every layer -----------------------------------


@pytest.fixture
async def pool() -> AsyncIterator[SlotPool]:
    slots = await open_slot_pool(
        "strict", size=8, uid_base=62000, disk_bytes=64 * 2**20, max_queued=None, service="test"
    )
    try:
        yield slots
    finally:
        slots.close()


async def python(code: str, slot: Slot, limits: EffectiveLimits = LIMITS) -> SandboxResult:
    with workspace(prefix="dcodex-test-") as cwd:
        (cwd / "main.py").write_text(textwrap.dedent(code))
        return await run_sandboxed(["python3", "main.py"], cwd=cwd, limits=limits, slot=slot)


async def test_cpu_time_counts_every_process_of_the_tree(pool: SlotPool) -> None:
    code = """
        import os, time
        def burn(seconds):
            end = time.process_time() + seconds
            while time.process_time() < end:
                pass
        done_r, done_w = os.pipe()
        for _ in range(2):
            if os.fork() == 0:
                burn(0.3)
                os._exit(0)  # the parent never waits: the reaper collects them
        # EOF once both children have exited (each held the write end), whatever the
        # host's load: a run is one CPU scheduling entity, its children share its time.
        os.close(done_w)
        os.read(done_r, 1)
        """
    async with pool.acquire() as slot:
        result = await python(code, slot)
    assert result.exit_code == 0, result.stderr
    assert result.cpu_time_ms >= 600, result.cpu_time_ms


async def test_peak_memory_is_the_whole_tree(pool: SlotPool) -> None:
    # CPU and wall time to spare: zeroing 200 MB took over the usual 2 s of CPU in the
    # cgroup-v2 VM (tests/test_vm_cgroup_v2.py), where the CPU is emulated.
    limits = LIMITS.model_copy(update={"cpu_time_s": 10, "wall_time_s": 30})
    code = """
        import os, time
        block = bytearray(100 * 2**20)  # touched: zeroed page by page
        child = os.fork()
        if child == 0:
            other = bytearray(100 * 2**20)
            time.sleep(0.3)
            os._exit(0)
        os.waitpid(child, 0)
        """
    async with pool.acquire() as slot:
        result = await python(code, slot, limits)
    assert result.exit_code == 0, result
    assert result.peak_memory_bytes >= 200 * 2**20, result.peak_memory_bytes


async def test_memory_verdict_is_the_kernels_oom_kill(pool: SlotPool) -> None:
    # CPU and wall time to spare: zeroing 1.2 GB must not hit them first on a busy host.
    limits = EffectiveLimits(
        **{**LIMITS.__dict__, "memory_bytes": 1024 * 2**20, "cpu_time_s": 10, "wall_time_s": 30}
    )
    # Two processes of 600 MiB each: neither passes the address-space limit, the tree
    # passes the memory cgroup's, and the kernel kills.
    code = """
        import os, time
        os.fork()
        block = bytearray(600 * 2**20)
        time.sleep(1)
        print("survived")
        """
    async with pool.acquire() as slot:
        result = await python(code, slot, limits)
    assert result.memory_limit_hit is True
    assert decide_status(result, limits) == "memory_limit"


async def test_process_limit_is_per_run_and_reported(pool: SlotPool) -> None:
    async with pool.acquire() as slot:
        result = await python(FORK_UNTIL_REFUSED, slot)
    assert result.exit_code == 0, result.stderr
    assert 1 <= int(result.stdout) < LIMITS.processes
    assert result.process_limit_hit is True


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGSEGV, "SIGSEGV"), (signal.SIGTERM, "SIGTERM")]
)
async def test_signaled_carries_the_signal_number(
    pool: SlotPool, signum: signal.Signals, name: str
) -> None:
    async with pool.acquire() as slot:
        result = await python(f"import os, signal\nos.kill(os.getpid(), signal.{name})", slot)
    assert result.signal == signum
    assert decide_status(result, LIMITS) == "signaled"


async def test_many_runs_at_once_keep_their_own_output_and_verdicts(pool: SlotPool) -> None:
    """Different programs side by side: each gets its own output, usage and verdict."""
    tight = LIMITS.model_copy(update={"cpu_time_s": 0.5, "output_bytes": 1000})
    cases: list[tuple[str, str]] = []
    for _ in range(3):
        token = uuid.uuid4().hex
        cases += [
            (f"print('{token}')", "ok"),
            ("while True: pass", "cpu_time_limit"),
            ("while True: print('x' * 100)", "output_limit"),
            ("import os; os.abort()", "signaled"),
            ("raise SystemExit(3)", "runtime_error"),
        ]

    async def run(code: str) -> tuple[SandboxResult, str]:
        async with pool.acquire() as slot:
            result = await python(code, slot, tight)
        return result, decide_status(result, tight)

    outcomes = await asyncio.gather(*(run(code) for code, _ in cases))
    for (code, expected), (result, status) in zip(cases, outcomes, strict=True):
        assert status == expected, (code, result)
        if expected == "ok":
            assert result.stdout.decode() == code[7:-2] + "\n"
        if expected == "cpu_time_limit":
            assert 500 <= result.cpu_time_ms < 1500


USER_NAMESPACE_PROBE = """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
print("shadow", os.path.exists("/etc/shadow"), "root", os.path.exists("/root"))
try:
    socket.create_connection(("127.0.0.1", 4222), timeout=1)
    print("net open")
except OSError as error:
    print("net", error.errno)
try:
    open("/usr/dcodex-probe", "w")
    print("usr writable")
except OSError as error:
    print("usr", error.errno)
mounted = libc.mount(b"none", b"/usr", b"tmpfs", 0, None)
print("mount", mounted, ctypes.get_errno())
"""


async def test_user_namespace_layers_hold_without_the_per_slot_uid() -> None:
    """What `best` gives without root: the namespaces, made through a user namespace,
    with every capability dropped (tried here as root, with no slot uid)."""
    isolation = Isolation(namespaces=True, user_namespace=True)
    with workspace(prefix="dcodex-test-") as cwd:
        (cwd / "main.py").write_text(USER_NAMESPACE_PROBE)
        result = await run_sandboxed(
            ["python3", "main.py"], cwd=cwd, limits=LIMITS, slot=Slot(0, None, None, isolation)
        )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "shadow False root False"
    assert lines[1] == f"net {errno.ENETUNREACH}"
    assert lines[2] == f"usr {errno.EROFS}"
    assert lines[3] == f"mount -1 {errno.EPERM}", "no CAP_SYS_ADMIN left in the namespace"
    assert "user_namespace" in isolation.layers and "uid" not in isolation.layers


NOBODY = 65534


def test_a_user_namespace_run_is_held_to_its_process_limit() -> None:
    """What `best` gives without root has no pids cgroup and no uid of its own: the
    process limit still holds (RLIMIT_NPROC, which the kernel counts per user
    namespace), and the service user's own processes, more than the limit, count not
    against the run. Run as a plain user: root is exempt from RLIMIT_NPROC."""
    # The helper where a plain user may run it (outside pytest's 0700 tmp tree).
    cache = Path(tempfile.mkdtemp(prefix="dcodex-helper-"))
    cache.chmod(0o755)
    shutil.copy2(helper_binary(), cache)
    others = [subprocess.Popen(["sleep", "30"], user=NOBODY) for _ in range(LIMITS.processes)]
    try:
        status, output = _as_plain_user(lambda: _forks_in_a_user_namespace(cache))
    finally:
        for process in others:
            stop_process(process)
        shutil.rmtree(cache)
    assert status == 0, output
    forks = json.loads(output)
    assert forks["exit_code"] == 0, forks["stderr"]
    assert 1 <= int(forks["stdout"]) < LIMITS.processes


def _forks_in_a_user_namespace(helper_cache: Path) -> str:
    os.environ["DCODEX_CACHE_DIR"] = str(helper_cache)
    helper_binary.cache_clear()
    isolation = Isolation(namespaces=True, user_namespace=True)
    result = asyncio.run(python(FORK_UNTIL_REFUSED, Slot(0, None, None, isolation)))
    outcome = {"exit_code": result.exit_code, "stdout": result.stdout.decode()}
    return json.dumps(outcome | {"stderr": result.stderr.decode()})


def _as_plain_user(work: Callable[[], str]) -> tuple[int, str]:
    """`work`'s answer, done in a child of this process that has become `nobody` (a
    fork: nothing of the test's environment needs to be readable by that user)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.chdir("/")
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = work()
            code = 0
        except BaseException:
            answer = traceback.format_exc()
        os.write(write_end, answer.encode())
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer_pipe:
        answer_bytes = answer_pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), answer_bytes.decode()
