"""Real programs that try to escape, through a real runner with `--isolation strict`.

Each attack runs beside an innocent program; the attack must be stopped or contained,
and the innocent run (and the runner) must go on as if nothing happened.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

import dcodex.shared.service.config
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from tests.conftest import ServiceProcesses

INNOCENT = {"language": "python", "code": "print(sum(range(10)))"}


async def attack(client: DcodexClient, language: str, code: str, **fields: Any) -> ExecutionResult:
    """Run `code` next to an innocent program; the innocent one must be unharmed."""
    request = {"language": language, "code": textwrap.dedent(code), **fields}
    result, innocent = await asyncio.gather(client.run(request), client.run(INNOCENT))
    assert (innocent.status, innocent.stdout) == ("ok", "45\n"), innocent
    return result


OWN_SOURCE = Path(dcodex.shared.service.config.__file__).resolve()  # a file of the runner's


def read_host_file(path: str) -> str:
    return Path(path).read_text()


def host_has(path: str) -> bool:
    return Path(path).exists()


def processes_mentioning(token: str) -> list[str]:
    """Command lines, on the whole host, that contain `token` (given to a run as an arg)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # it ended while we looked
        if token in cmdline:
            found.append(cmdline)
    return found


# --- the network ---------------------------------------------------------------------


async def test_cannot_connect_to_the_nats_port(client: DcodexClient, nats_url: str) -> None:
    port = int(nats_url.rsplit(":", 1)[1])
    result = await attack(
        client,
        "python",
        f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("connected")
        except OSError as error:
            print("blocked", error.errno)
        """,
    )
    assert result.status == "ok"
    assert result.stdout.startswith("blocked"), result.stdout


async def test_c_program_cannot_reach_an_outside_address(client: DcodexClient) -> None:
    result = await attack(
        client,
        "c",
        """
        #include <arpa/inet.h>
        #include <stdio.h>
        #include <sys/socket.h>
        #include <unistd.h>
        int main(void) {
            struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53)};
            inet_pton(AF_INET, "8.8.8.8", &to.sin_addr);
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0) { perror("socket"); return 0; }
            if (connect(fd, (struct sockaddr *)&to, sizeof to) == 0) puts("connected");
            else perror("blocked");
            return 0;
        }
        """,
    )
    assert result.status == "ok"
    assert "connected" not in result.stdout
    assert "blocked: Network is unreachable" in result.stderr


# --- files ---------------------------------------------------------------------------


async def test_cannot_read_etc_shadow(client: DcodexClient) -> None:
    secret = read_host_file("/etc/shadow")
    result = await attack(
        client,
        "c",
        """
        #include <stdio.h>
        int main(void) {
            FILE *f = fopen("/etc/shadow", "r");
            if (!f) { perror("blocked"); return 0; }
            char line[4096];
            while (fgets(line, sizeof line, f)) fputs(line, stdout);
            return 0;
        }
        """,
    )
    assert "blocked" in result.stderr
    assert secret.splitlines()[0] not in result.stdout


async def test_cannot_read_the_runners_files_or_environment(
    client: DcodexClient, stack: ServiceProcesses
) -> None:
    runner_pid = stack.processes["runner"][0].pid
    own_source = OWN_SOURCE
    result = await attack(
        client,
        "python",
        f"""
        import os
        for path in ({str(own_source)!r}, "/proc/{runner_pid}/environ", "/proc/1/environ"):
            try:
                print(path, open(path, "rb").read()[:200])
            except OSError as error:
                print(path, "blocked", error.strerror)
        print(sorted(os.environ))
        """,
    )
    lines = result.stdout.splitlines()
    assert f"{own_source} blocked" in lines[0]
    assert "blocked" in lines[1]
    # pid 1 is the sandbox's own reaper: all it can show is the sandbox's clean env.
    assert "DCODEX" not in result.stdout and "NATS" not in result.stdout
    assert lines[3] == str(sorted(["HOME", "LANG", "LC_ALL", "PATH", "TMPDIR"]))


async def test_cannot_see_another_runs_working_directory(client: DcodexClient) -> None:
    token = uuid.uuid4().hex
    victim = client.run(
        {
            "language": "python",
            "code": f"import os, time\nopen('secret.txt', 'w').write('{token}')\n"
            "print(os.getcwd())\ntime.sleep(1.5)",
            "limits": {"wall_time_s": 5},
        }
    )
    snoop = """
        import glob, os, time
        time.sleep(0.5)
        found = []
        for pattern in ("/tmp/dcodex-run-*/*", "/box/*", "/tmp/*", "/proc/*/cwd/*"):
            for path in glob.glob(pattern):
                try:
                    found.append(open(path).read())
                except OSError:
                    pass
        print(os.getcwd(), sorted(os.listdir(".")), len(found))
        print("\\n".join(found))
        """
    victim_result, result = await asyncio.gather(victim, attack(client, "python", snoop))
    assert victim_result.stdout == "/box\n"
    assert result.stdout.startswith("/box ['main.py']"), result.stdout
    assert token not in result.stdout


async def test_writes_outside_the_working_directory_fail_and_tmp_vanishes(
    client: DcodexClient,
) -> None:
    token = uuid.uuid4().hex
    result = await attack(
        client,
        "python",
        f"""
        for path in ("/usr/{token}", "/etc/{token}", "/{token}", "/proc/{token}"):
            try:
                open(path, "w").write("x")
                print(path, "written")
            except OSError as error:
                print(path, "blocked")
        open("/tmp/{token}", "w").write("scratch")  # allowed, and private to the run
        open("/box/{token}", "w").write("scratch")
        print("done")
        """,
    )
    assert result.status == "ok", result.stderr
    assert result.stdout.count("blocked") == 4 and "written" not in result.stdout
    assert not any(host_has(f"{root}/{token}") for root in ("/usr", "/etc", "", "/tmp"))


async def test_filling_the_disk_stops_at_the_cap(client: DcodexClient) -> None:
    result = await attack(
        client,
        "python",
        """
        import errno
        chunk, written = b"x" * 2**20, 0
        try:
            for n in range(1000):
                with open(f"fill{n}", "wb") as f:
                    for _ in range(8):  # 8 MiB a file: under the file-size limit
                        f.write(chunk)
                        written += len(chunk)
        except OSError as error:
            print("stopped", errno.errorcode[error.errno], written // 2**20)
        """,
        limits={"wall_time_s": 10, "cpu_time_s": 5},
    )
    assert result.status == "ok", result.stderr
    _, code, mib = result.stdout.split()
    assert code == "ENOSPC"
    disk_mib = dcodex.shared.service.config.Settings().sandbox_disk_bytes // 2**20
    assert int(mib) <= disk_mib


# --- processes -----------------------------------------------------------------------


async def test_fork_bomb_is_contained_and_leaves_nothing(client: DcodexClient) -> None:
    token = uuid.uuid4().hex  # an argument: every forked copy carries it in its cmdline
    result = await attack(
        client,
        "c",
        """
        #include <stdio.h>
        #include <unistd.h>
        int main(void) {
            puts("forking"); fflush(stdout);
            for (;;) fork();
        }
        """,
        limits={"wall_time_s": 2},
        args=[token],
    )
    assert result.status in ("cpu_time_limit", "wall_time_limit"), result
    assert result.stdout.startswith("forking")
    assert processes_mentioning(token) == []


async def test_kill_minus_one_hits_nothing_outside(client: DcodexClient) -> None:
    result = await attack(
        client,
        "c",
        """
        #include <signal.h>
        #include <stdio.h>
        int main(void) {
            int killed = kill(-1, SIGKILL);
            printf("kill returned %d, still here\\n", killed);
            return 0;
        }
        """,
    )
    assert result.status == "ok"
    assert "still here" in result.stdout


async def test_a_double_forked_daemon_does_not_outlive_its_run(client: DcodexClient) -> None:
    token = uuid.uuid4().hex
    result = await attack(
        client,
        "python",
        f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "60", "{token}"])
            os._exit(0)
        print("parent leaves")
        """,
    )
    assert result.status == "ok"
    assert processes_mentioning(token) == []


async def test_ptrace_of_another_process_fails(client: DcodexClient) -> None:
    result = await attack(
        client,
        "c",
        """
        #include <errno.h>
        #include <stdio.h>
        #include <string.h>
        #include <sys/ptrace.h>
        #include <unistd.h>
        int main(void) {
            int targets[] = {1, getppid(), 2, 100};
            for (int i = 0; i < 4; i++) {
                long ok = ptrace(PTRACE_ATTACH, targets[i], 0, 0);
                printf("%d %s\\n", targets[i], ok == 0 ? "attached" : strerror(errno));
            }
            return 0;
        }
        """,
    )
    assert result.status == "ok"
    assert "attached" not in result.stdout, result.stdout


async def test_proc_shows_only_the_runs_own_processes(client: DcodexClient) -> None:
    result = await attack(
        client,
        "python",
        """
        import os
        print(sorted(int(name) for name in os.listdir("/proc") if name.isdigit()))
        """,
    )
    pids = [int(pid) for pid in result.stdout.strip("[]\n").split(", ")]
    assert pids == [1, 2], "the reaper and the program itself"


# --- limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "blocks = []\nwhile True:\n    blocks.append(bytearray(2**20))"),
        (
            "c",
            """
            #include <stdlib.h>
            #include <string.h>
            int main(void) {
                for (;;) { char *p = malloc(1 << 20); if (!p) return 3; memset(p, 1, 1 << 20); }
            }
            """,
        ),
    ],
)
async def test_allocating_past_the_memory_limit(
    client: DcodexClient, language: str, code: str
) -> None:
    limit = 64 * 2**20
    result = await attack(client, language, code, limits={"memory_bytes": limit})
    assert result.status == "memory_limit", result
    assert result.peak_memory_bytes <= limit


async def test_busy_loop_hits_the_cpu_limit(client: DcodexClient) -> None:
    result = await attack(client, "c", "int main(void) { for (;;) {} }", limits={"cpu_time_s": 0.5})
    assert result.status == "cpu_time_limit"
    assert 500 <= result.cpu_time_ms < 1500


async def test_sleeping_past_the_wall_clock(client: DcodexClient) -> None:
    result = await attack(
        client, "python", "import time\ntime.sleep(30)", limits={"wall_time_s": 0.5}
    )
    assert result.status == "wall_time_limit"
    assert result.wall_clock_timeout
    assert result.cpu_time_ms < 500
