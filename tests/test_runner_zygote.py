"""A runner forks Python runs from its zygote (`--python-zygote`, the default) and
answers exactly as a runner without one (`--no-python-zygote`)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.shared.client import DcodexClient
from tests.conftest import stop_process, wait_for_subject
from tests.test_isolation import runner_argv, start_logged

pytestmark = [pytest.mark.bus, pytest.mark.root]

ZYGOTE_READY_S = 30.0  # the longest a zygote may take to start before it is a failure
# Runs the zygote serves: without warm sandboxes, every Python run.
WHO_STARTED_ME = "print(open('/proc/1/cmdline').read().split(chr(0))[0:3])"
PROGRAMS = [
    "import sys\nprint(sys.argv, __name__, __file__)\nprint(input()[::-1])\n",
    "def f():\n    raise ValueError('nope')\nf()\n",
    "print('unclosed'\n",
    "import sys\nsys.exit(4)\n",
]


@pytest.fixture(scope="module")
def runners(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two runners, zygote on and off, each on a prefix and uids of its own; their logs."""
    logs = tmp_path_factory.mktemp("zygote-runners")
    started: list[subprocess.Popen[bytes]] = []
    try:
        for prefix, uid_base, flag in (
            ("zyg", 64000, []),
            ("nozyg", 64100, ["--no-python-zygote"]),
        ):
            argv = runner_argv(
                nats_url, prefix, "--warm-interpreters", "0", "--sandbox-uid-base", str(uid_base),
                *flag,
            )  # fmt: skip
            started.append(start_logged(argv, Path(logs) / f"{prefix}.log"))
        for prefix in ("zyg", "nozyg"):
            asyncio.run(wait_for_subject(nats_url, f"{prefix}.languages"))
        yield Path(logs)
    finally:
        for process in started:
            stop_process(process)


async def started_by(url: str, prefix: str) -> str:
    """What started one run's pid 1: `['python3', '-c', ...]` for a fork of the zygote,
    the sandbox helper's argv for a cold run."""
    async with await DcodexClient.connect(url, prefix=prefix) as client:
        result = await client.run({"language": "python", "code": WHO_STARTED_ME})
    return result.stdout


async def zygote_started(url: str) -> str:
    """What started the zygote runner's runs once its zygote serves them; runs go cold
    while it is starting, which under the whole suite's load once took longer than 50
    tries. The quoted `'-c'` is the zygote's argv; a bare `-c` also matches the cold
    helper's `--config-fd`."""
    deadline = time.monotonic() + ZYGOTE_READY_S
    while True:
        started = await started_by(url, "zyg")
        if "'-c'" in started or time.monotonic() > deadline:
            return started
        await asyncio.sleep(0.1)


async def test_python_runs_are_forked_from_the_zygote_only_when_on(
    nats_url: str, runners: Path
) -> None:
    # pid 1 is a fork of the zygote
    assert "'-c'" in await zygote_started(nats_url), zygote_lines(runners)
    assert "dcodex-exec" in await started_by(nats_url, "nozyg")


@pytest.mark.parametrize("code", PROGRAMS)
async def test_answers_are_those_of_a_runner_without_it(
    nats_url: str, runners: Path, code: str
) -> None:
    request = {"language": "python", "code": code, "stdin": "olleh\n", "args": ["x"]}
    await zygote_started(nats_url)
    answers = []
    for prefix in ("zyg", "nozyg"):
        async with await DcodexClient.connect(nats_url, prefix=prefix) as client:
            result = await client.run(request)
        answers.append((result.status, result.exit_code, result.stdout, result.stderr))
    assert answers[0] == answers[1]


def zygote_lines(logs: Path) -> list[str]:
    """What the runner with a zygote logged of it (why a run went cold)."""
    text = (logs / "zyg.log").read_text(errors="replace")
    return [line for line in text.splitlines() if "zygote" in line]


async def test_attacks_leave_the_runner_serving(nats_url: str, runners: Path) -> None:
    await zygote_started(nats_url)
    attacks = [
        "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "x = []\nwhile True:\n    x.append(bytearray(2**24))\n",
    ]
    async with await DcodexClient.connect(nats_url, prefix="zyg") as client:
        results = await asyncio.gather(
            *(client.run({"language": "python", "code": code}) for code in attacks)
        )
        assert all(result.status != "ok" or result.exit_code != 0 for result in results[1:])
        after = await client.run({"language": "python", "code": WHO_STARTED_ME})
    assert "'-c'" in after.stdout, zygote_lines(runners)
