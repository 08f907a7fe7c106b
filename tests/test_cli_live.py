"""`dcodex bus run` prints output live, and `--attach` connects a terminal to a program."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServiceProcesses, dcodex_argv, stop_process
from tests.test_cli import bus, flat, shown

pytestmark = pytest.mark.bus

SLOW = """
import sys, time
print("first line", flush=True)
time.sleep(2)
print("second line")
"""

QUESTIONS_PY = """
while True:
    try:
        question = input()
    except EOFError:
        break
    print(f"answer to {question}: {len(question)}", flush=True)
print("goodbye")
"""

QUESTIONS_C = """
#include <stdio.h>
#include <string.h>
int main(void) {
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\\n")] = 0;
        printf("answer to %s: %zu\\n", line, strlen(line));
        fflush(stdout);
    }
    puts("goodbye");
    return 0;
}
"""


def program(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    # A fresh comment each time: never a cache hit from an earlier test.
    comment = "//" if name.endswith(".c") else "#"
    path.write_text(f"{textwrap.dedent(code)}\n{comment} {uuid.uuid4().hex}\n")
    return path


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        stop_process(process)


def test_output_is_printed_while_the_program_runs(
    stack: ServiceProcesses, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    path = program(tmp_path, "slow.py", SLOW)
    argv = dcodex_argv(
        "bus", "--server", stack.url, "run", "-f", str(path), "--limit-wall-time", "5"
    )
    cli = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(cli)
    assert cli.stdout is not None
    seen = []
    for line in cli.stdout:
        seen.append(line)
        if "first line" in line:
            break
    assert cli.poll() is None, "the first line is shown before the program ends"
    rest, _ = cli.communicate(timeout=60)
    assert cli.returncode == 0
    assert "second line" in rest and "ok" in flat(rest), "".join(seen) + rest


def test_no_live_prints_the_same_at_the_end(stack: ServiceProcesses, tmp_path: Path) -> None:
    path = program(tmp_path, "slow.py", SLOW)
    completed = bus(stack.url, "run", "-f", str(path), "--no-live", "--limit-wall-time", "5")
    assert completed.returncode == 0, shown(completed)
    assert "first line second line" in flat(completed.stdout)


@pytest.mark.parametrize(("name", "code"), [("qa.py", QUESTIONS_PY), ("qa.c", QUESTIONS_C)])
def test_attach_feeds_the_terminal_to_the_program(
    stack: ServiceProcesses, tmp_path: Path, name: str, code: str
) -> None:
    path = program(tmp_path, name, code)
    completed = subprocess.run(
        dcodex_argv("bus", "--server", stack.url, "run", "--attach", "-f", str(path)),
        input="life\nuniverse\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, shown(completed)
    assert completed.stdout == "answer to life: 4\nanswer to universe: 8\ngoodbye\n"
    assert flat(completed.stderr).startswith("ok")


def test_ctrl_c_in_attach_mode_interrupts_the_program(
    stack: ServiceProcesses, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    code = """
import time

try:
    print("ready", flush=True)
    time.sleep(20)
except KeyboardInterrupt:
    print("interrupted by the user")
"""
    path = program(tmp_path, "wait.py", code)
    argv = dcodex_argv(
        "bus", "--server", stack.url, "run", "-a", "-f", str(path), "--limit-wall-time", "25"
    )
    cli = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    started.append(cli)
    assert cli.stdout is not None
    assert cli.stdout.readline() == "ready\n"
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=30)
    assert cli.returncode == 0, err
    assert out == "interrupted by the user\n"


def test_attach_takes_exactly_one_file(stack: ServiceProcesses, tmp_path: Path) -> None:
    first, second = program(tmp_path, "a.py", "print(1)"), program(tmp_path, "b.py", "print(2)")
    completed = bus(stack.url, "run", "--attach", "-f", str(first), "-f", str(second))
    assert completed.returncode == 2
    assert "--attach runs one --file" in completed.stderr
