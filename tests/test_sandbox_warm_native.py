"""Warm native sandboxes: a deferred sandbox, set up before its run up to the program's
exec and then handed a compiled binary, behaves as a cold run's does, with every layer
on; serves one run only; and refuses a handover that lies, the pool serving on."""

from __future__ import annotations

import asyncio
import errno
import re
import resource
import subprocess
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from dcodex.services.runner.verdict import decide_status
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.handover import HandedFile, deferred_handover
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR
from dcodex.shared.sandbox.probe import detect_isolation
from dcodex.shared.sandbox.run import SandboxResult, run_sandboxed
from dcodex.shared.sandbox.slots import SlotPool, open_slot_pool
from dcodex.shared.sandbox.warm import WarmPool, WarmSandbox, WarmSpec, start_warm_pool
from dcodex.shared.sandbox.workspace import hand_over, workspace, write_file
from tests.test_sandbox_hardening import SOCKET_HOG_C, SYSCALLS_C, errnos
from tests.test_sandbox_security import processes_mentioning
from tests.test_sandbox_warm import LIMITS as PYTHON_LIMITS
from tests.test_sandbox_warm import MiB, take_started

# Sandboxes on slots of their own: a uid per slot and its cgroups need root.
pytestmark = pytest.mark.root

# A memory limit that kernel memory (socket buffers) passes before the address space;
# a CPU limit well within the wall clock, even on a loaded machine.
LIMITS = PYTHON_LIMITS.model_copy(
    update={"memory_bytes": 48 * MiB, "cpu_time_s": 0.5, "wall_time_s": 3.0}
)
ENV = clean_env(Path(SANDBOX_WORKDIR))
SPEC = WarmSpec((), "", ENV, LIMITS, deferred=True)
# This module's slots: apart from the services' (61000+) and the other tests' pools.
UID_BASE = 62300

# What a program can see of itself and of its sandbox: the same cold and warm.
PROBE_C = r"""
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
extern char **environ;
static void show(const char *path, const char *key) {
    FILE *file = fopen(path, "r");
    char line[512];
    while (file && fgets(line, sizeof line, file))
        if (key == NULL || strncmp(line, key, strlen(key)) == 0) printf("%s: %s", path, line);
    if (file) fclose(file);
}
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("argv %s\n", argv[i]);
    printf("uid %d %d\n", getuid(), getgid());
    printf("pid %d ppid %d\n", getpid(), getppid());
    char cwd[256];
    printf("cwd %s\n", getcwd(cwd, sizeof cwd));
    struct stat info;
    stat("/box/main", &info);
    printf("main mode %o size %lld\n", info.st_mode & 07777, (long long)info.st_size);
    DIR *box = opendir("/box");
    struct dirent *entry;
    while (box && (entry = readdir(box))) printf("box %s\n", entry->d_name);
    for (char **env = environ; *env; env++) printf("env %s\n", *env);
    int limits[] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_STACK,
                    RLIMIT_CORE, RLIMIT_NPROC};
    for (unsigned i = 0; i < sizeof limits / sizeof *limits; i++) {
        struct rlimit value;
        getrlimit(limits[i], &value);
        printf("rlimit %d %llu %llu\n", limits[i], (unsigned long long)value.rlim_cur,
               (unsigned long long)value.rlim_max);
    }
    show("/proc/self/status", "NoNewPrivs");
    show("/proc/self/status", "Seccomp:");
    show("/proc/self/status", "CapEff");
    show("/proc/self/cgroup", NULL);
    show("/proc/self/oom_score_adj", NULL);
    show("/proc/1/cmdline", NULL);
    printf("/tmp %d /etc/passwd %d /usr writable %d\n", access("/tmp", W_OK),
           access("/etc/passwd", F_OK), access("/usr", W_OK));
    char input[256] = {0};
    size_t got = fread(input, 1, sizeof input - 1, stdin);
    printf("stdin %zu [%s]\n", got, input);
    return 0;
}
"""

# Programs whose ends a verdict tells apart; each the same cold and warm.
ENDINGS_C = {
    "exit": "int main(void) { return 3; }",
    "abort": "#include <stdlib.h>\nint main(void) { abort(); }",
    "segv": "int main(void) { volatile int *p = 0; return *p; }",
    "stderr": '#include <stdio.h>\nint main(void) { fputs("to stderr\\n", stderr); return 1; }',
    "spin": "int main(void) { for (;;) {} }",
    "sleep": "#include <unistd.h>\nint main(void) { sleep(30); return 0; }",
    "address space": """
        #include <stdlib.h>
        int main(void) { for (;;) if (!malloc(1 << 20)) return 7; }""",
    "memory": SOCKET_HOG_C,
    "flood": '#include <stdio.h>\nint main(void) { for (;;) puts("xxxxxxxxxxxxxxxx"); }',
    "forks": """
        #include <stdio.h>
        #include <unistd.h>
        int main(void) {
            int made = 0;
            for (int i = 0; i < 64; i++) { pid_t p = fork(); if (p == 0) { sleep(5); _exit(0); }
                                           if (p > 0) made++; }
            printf("made %d\\n", made);
            return 0;
        }""",
}

# The first run leaves what it can; the second looks for it.
LEAVE_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/shm.h>
#include <unistd.h>
int main(int argc, char **argv) {
    close(open("/box/left", O_CREAT | O_WRONLY, 0644));
    close(open("/tmp/left", O_CREAT | O_WRONLY, 0644));
    printf("shm %d msg %d\n", shmget(0x5eed, 4096, IPC_CREAT | 0666),
           msgget(0x5eed, IPC_CREAT | 0666));
    if (fork() == 0) {
        setsid();
        if (fork() == 0) execl("/bin/sleep", "sleep", "60", argv[1], (char *)0);
        _exit(0);
    }
    puts("left");
    return 0;
}
"""
LOOK_C = r"""
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/shm.h>
#include <unistd.h>
int main(void) {
    printf("box %d tmp %d\n", access("/box/left", F_OK), access("/tmp/left", F_OK));
    int shm = shmget(0x5eed, 0, 0), shm_errno = errno;
    int msg = msgget(0x5eed, 0), msg_errno = errno;
    printf("shm %d %d msg %d %d\n", shm, shm_errno, msg, msg_errno);
    int processes = 0;
    DIR *proc = opendir("/proc");
    struct dirent *entry;
    while ((entry = readdir(proc))) processes += atoi(entry->d_name) > 0;
    printf("processes %d\n", processes);
    return 0;
}
"""


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], bytes]]:
    directory = tmp_path_factory.mktemp("warm-native")
    built: dict[str, bytes] = {}

    def compile_c(code: str) -> bytes:
        if code not in built:
            source = directory / f"p{len(built)}.c"
            source.write_text(textwrap.dedent(code))
            binary = source.with_suffix("")
            subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
            built[code] = binary.read_bytes()
        return built[code]

    yield compile_c


@pytest.fixture
async def pool() -> AsyncIterator[SlotPool]:
    slots = await open_slot_pool(
        "strict", size=2, uid_base=UID_BASE, disk_bytes=64 * MiB, max_queued=None, service="wntest"
    )
    try:
        yield slots
    finally:
        slots.close()


@asynccontextmanager
async def one_warm(uid_base: int, disk_bytes: int) -> AsyncIterator[WarmPool]:
    """A pool of one deferred sandbox: its runs, one after the other, share a uid."""
    isolation = await detect_isolation("strict", disk_bytes=disk_bytes, probe_uid=uid_base)
    pool = start_warm_pool(
        SPEC, 1, isolation=isolation, uid_base=uid_base, service=f"wn{uid_base}", languages=()
    )
    try:
        yield pool
    finally:
        pool.close()


async def cold(
    slots: SlotPool, binary: bytes, stdin: bytes = b"", args: tuple[str, ...] = ()
) -> SandboxResult:
    async with slots.acquire() as slot:
        with workspace(prefix="dcodex-test-") as cwd:
            write_file(cwd, "main", binary, slot, mode=0o500)
            hand_over(cwd, slot)
            return await run_sandboxed(
                ["./main", *args], cwd=cwd, limits=LIMITS, stdin=stdin, env=ENV, slot=slot
            )


async def warm(
    slots: SlotPool,
    binary: bytes,
    stdin: bytes = b"",
    args: tuple[str, ...] = (),
    idle_s: float = 0,
) -> SandboxResult:
    async with slots.acquire() as slot:
        sandbox = WarmSandbox(SPEC, slot)
        try:
            await asyncio.sleep(idle_s)
            return await sandbox.run_program(
                [HandedFile("main", binary, 0o500)], ["./main", *args], stdin, None
            )
        finally:
            await sandbox.settle()  # before the slot goes back: as a pool does


async def test_a_warm_native_run_sees_what_a_cold_run_sees_every_layer_on(
    pool: SlotPool, build: Callable[[str], bytes]
) -> None:
    binary = build(PROBE_C)
    stdin, args = b"the input\nof the run", ("one", "two words")
    cold_run = await cold(pool, binary, stdin, args)
    warm_run = await warm(pool, binary, stdin, args)
    assert cold_run.exit_code == 0 and warm_run.exit_code == 0, (cold_run, warm_run)
    cold_lines, warm_lines = cold_run.stdout.decode(), warm_run.stdout.decode()
    # Each ran on a slot of its own: only the uid differs.
    assert _without_uid(cold_lines) == _without_uid(warm_lines)
    assert "argv ./main\nargv one\nargv two words\n" in warm_lines
    assert re.search(rf"^uid ({UID_BASE}|{UID_BASE + 1}) \1$", warm_lines, re.M), warm_lines
    assert "pid 2 ppid 1\ncwd /box\nmain mode 500" in warm_lines  # the reaper is pid 1
    assert "NoNewPrivs:\t1" in warm_lines and "Seccomp:\t2" in warm_lines
    assert "stdin 20 [the input\nof the run]" in warm_lines
    as_limit = f"rlimit {resource.RLIMIT_AS} {LIMITS.memory_bytes} {LIMITS.memory_bytes}\n"
    fsize = f"rlimit {resource.RLIMIT_FSIZE} {LIMITS.file_size_bytes} {LIMITS.file_size_bytes}\n"
    assert as_limit in warm_lines and fsize in warm_lines, warm_lines


def _without_uid(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("uid ")]


@pytest.mark.parametrize("name", sorted(ENDINGS_C))
async def test_every_ending_and_verdict_is_a_cold_runs(
    pool: SlotPool, build: Callable[[str], bytes], name: str
) -> None:
    binary = build(ENDINGS_C[name])
    cold_run, warm_run = await cold(pool, binary), await warm(pool, binary)
    assert _facts(warm_run) == _facts(cold_run)
    assert decide_status(warm_run, LIMITS) == decide_status(cold_run, LIMITS)


def _facts(result: SandboxResult) -> tuple[object, ...]:
    """What a user sees of a run, but its times and sizes (the flood's own output is cut
    at the same cap, at whatever line the kill came)."""
    stdout = result.stdout if not result.output_truncated else len(result.stdout)
    return (
        result.exit_code,
        result.signal,
        stdout,
        result.stderr,
        result.output_truncated,
        result.wall_clock_timeout,
        result.killed_for,
        result.memory_limit_hit,
        result.process_limit_hit,
    )


async def test_the_wall_clock_starts_with_the_handover(
    pool: SlotPool, build: Callable[[str], bytes]
) -> None:
    binary = build('#include <stdio.h>\nint main(void) { puts("late but fine"); }')
    result = await warm(pool, binary, idle_s=LIMITS.wall_time_s + 0.5)
    assert result.stdout == b"late but fine\n" and not result.wall_clock_timeout


async def test_nothing_of_one_run_is_there_for_the_next(build: Callable[[str], bytes]) -> None:
    """One slot, so both runs have the same uid: files, IPC objects and processes of
    the first are gone for the second."""
    token = uuid.uuid4().hex
    async with one_warm(UID_BASE + 10, 64 * MiB) as pool:
        first = await (await take_started(pool)).run_program(
            [HandedFile("main", build(LEAVE_C), 0o500)], ["./main", token], b"", None
        )
        assert first.exit_code == 0 and first.stdout.endswith(b"left\n"), first
        assert processes_mentioning(token) == []
        second = await (await take_started(pool)).run_program(
            [HandedFile("main", build(LOOK_C), 0o500)], ["./main"], b"", None
        )
        lines = second.stdout.decode()
        assert "box -1 tmp -1\n" in lines, lines
        assert f"shm -1 {errno.ENOENT} msg -1 {errno.ENOENT}\n" in lines, lines
        assert "processes 2\n" in lines, "the reaper and the program itself"


async def test_the_system_call_filter_holds_in_a_warm_native_run(
    pool: SlotPool, build: Callable[[str], bytes]
) -> None:
    result = await warm(pool, build(SYSCALLS_C))
    assert result.exit_code == 0, result
    codes = errnos(result.stdout.decode())
    assert codes.pop("clone3") == errno.ENOSYS
    assert len(codes) == 25 and {n: c for n, c in codes.items() if c != errno.EPERM} == {}


def _description(*fields: bytes) -> bytes:
    text = b"".join(field + b"\0" for field in fields)
    return b"%010d" % len(text) + text


# Handovers that lie, each with the errno the helper reports ("error N handover").
LIES = {
    "longer than sent": (b"%010d" % 500 + b"1\x00main\x00500\x00", errno.EPROTO),
    "file longer than sent": (
        _description(b"1", b"main", b"500", b"1000", b"./main") + b"ab",
        errno.EPROTO,
    ),
    "slash in the name": (
        _description(b"1", b"../main", b"500", b"2", b"./main") + b"ab",
        errno.EINVAL,
    ),
    "dot dot": (_description(b"1", b"..", b"500", b"2", b"./main") + b"ab", errno.EINVAL),
    "a path": (_description(b"1", b"/etc/passwd", b"644", b"2", b"./main") + b"ab", errno.EINVAL),
    "the same name twice": (
        _description(b"2", b"main", b"500", b"2", b"main", b"500", b"2", b"./main") + b"abcd",
        errno.EEXIST,
    ),
    "not a length": (b"abcdefghij" + b"1\0", errno.EPROTO),
    "no argv": (_description(b"0"), errno.EPROTO),
    "a negative size": (_description(b"1", b"main", b"500", b"-5", b"./main"), errno.EPROTO),
    "too many files": (_description(b"99", b"./main"), errno.EPROTO),
}  # fmt: skip


async def test_a_handover_that_lies_is_refused_and_the_pool_serves_on(
    build: Callable[[str], bytes],
) -> None:
    hello = build('#include <stdio.h>\nint main(void) { puts("served"); }')
    too_big = _description(b"1", b"main", b"500", b"%d" % (6 * MiB), b"./main") + bytes(6 * MiB)
    huge = (too_big, errno.ENOSPC)
    async with one_warm(UID_BASE + 20, 4 * MiB) as pool:
        for name, (lie, code) in [*LIES.items(), ("beyond the disk", huge)]:
            with pytest.raises(OSError) as refused:
                await (await take_started(pool)).run_handover(lie, b"", None)
            assert refused.value.errno == code, (name, refused.value)
            assert "handover" in str(refused.value), name
            served = await (await take_started(pool)).run_program(
                [HandedFile("main", hello, 0o500)], ["./main"], b"", None
            )
            assert served.stdout == b"served\n", (name, served)


async def test_an_unused_warm_sandbox_ends_quietly(pool: SlotPool) -> None:
    async with pool.acquire() as slot:
        sandbox = WarmSandbox(SPEC, slot)
        result = await sandbox.run_handover(b"", b"", None)  # EOF: nothing handed over
        await sandbox.settle()
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"", b"")


def test_the_handover_names_only_plain_files() -> None:
    for name in ("", ".", "..", "a/b", "../x", "/etc/passwd"):
        with pytest.raises(ValueError):
            deferred_handover([HandedFile(name, b"", 0o400)], ["./main"])
    assert deferred_handover([], ["./main", "with\0nul"]) is None
    assert deferred_handover([HandedFile("main", b"BIN", 0o500)], ["./main", "x"]) == (
        b"0000000022" + b"1\x00main\x00500\x003\x00./main\x00x\x00" + b"BIN"
    )
