"""`dcodex bus run -i`: the menu, driven through the subprocess's stdin as a user types."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import ServiceProcesses, dcodex_argv
from tests.test_cli import ROOT, STDIN_C, TIMEOUT_S, assert_no_traceback, flat, shown, user_env

pytestmark = pytest.mark.bus


def menu(server: str, typed: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dcodex_argv("bus", "--server", server, "run", "-i", *args),
        input=typed,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
        env=user_env(),
    )


def test_menu_lists_runs_with_typed_stdin_and_toggles_the_cache(
    stack: ServiceProcesses, tmp_path: Path
) -> None:
    shutil.copy(ROOT / STDIN_C, tmp_path / "greet.c")
    (tmp_path / "tally.py").write_text(f"print('menu', {uuid.uuid4().hex!r})\n")
    typed = "\n".join(
        [
            "1",  # greet.c
            r"Ada\n2 3\n",  # its stdin, with escapes
            "2",  # tally.py, cache on: a miss, then stored
            "",  # no stdin
            "2",
            "",  # again: a hit
            "c",  # cache off
            "2",
            "",  # a miss although it is stored
            "9",  # not on the menu
            "q",
        ]
    )
    completed = menu(stack.url, typed + "\n", "-d", ".", cwd=tmp_path)
    assert completed.returncode == 0, shown(completed)
    out = flat(completed.stdout)
    assert "2 programs, cache on" in out
    assert re.search(r"1 greet\.c \(c\) 2 tally\.py \(python\)", out), shown(completed)
    assert "Hello, Ada! You gave 2 number(s); their sum is 5" in out
    tally_runs = re.findall(r"tally\.py \(python\) ─+ menu .*? cache (hit|miss)", out)
    assert tally_runs == ["miss", "hit", "miss"], shown(completed)
    assert "cache off" in out
    assert "unknown choice '9': type a number from 1 to 2, c, l or q" in out
    assert_no_traceback(completed)


def test_menu_ends_at_end_of_input_and_defaults_to_the_examples(stack: ServiceProcesses) -> None:
    completed = menu(stack.url, "", cwd=ROOT)
    assert completed.returncode == 0, shown(completed)
    out = flat(completed.stdout)
    assert re.search(r"\d+ programs, cache on", out), shown(completed)
    assert "examples/c/01_hello_world.c (c)" in out
    assert "examples/python/09_output_flood.py (python)" in out


def test_menu_shows_an_error_reply_and_goes_on(stack: ServiceProcesses, tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text('print("still here")\n')
    completed = menu(
        stack.url, "1\n\nq\n", "-f", "hello.py", "--limit-wall-time", "99", cwd=tmp_path
    )
    assert completed.returncode == 0, shown(completed)
    out = flat(completed.stdout)
    assert "error 400: limits.wall_time_s is 99" in out, shown(completed)
    assert out.rstrip().endswith("dcodex> q"), "the menu asked again after the error"


def test_menu_does_not_combine_with_json(tmp_path: Path) -> None:
    completed = menu("nats://127.0.0.1:1", "", "--json", cwd=tmp_path)
    assert completed.returncode == 2, shown(completed)
    assert "--interactive" in completed.stderr and "--json" in completed.stderr
