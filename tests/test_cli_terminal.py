"""`dcodex bus run` shows a program's control characters escaped (issue 14, finding 12).

A real program writes what would drive the user's terminal: an OSC 52 clipboard write,
a window title, a screen clear, a carriage return and erase-line that overwrite the
line with a forged verdict, a bidi override. Whatever the CLI prints carries none of
them raw, with live output and without; `--json` keeps the exact output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ServiceProcesses
from tests.test_cli import bus, shown

pytestmark = pytest.mark.bus

HOSTILE = r"""
import sys
sys.stdout.write("before\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x1b[2J\x1b[H")
sys.stdout.write("\r\x1b[2Kok  exit 0  cpu 1 ms\n")
sys.stdout.write("\u202eevil\u202c\x9b31m\x7f\n")
sys.stderr.write("err\x1b[31mred\x1b[0m\n")
"""

RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u202c", "\r", "\x7f")


def hostile(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.py"
    path.write_text(HOSTILE)
    return path


@pytest.mark.parametrize("live", ["--live", "--no-live"])
def test_control_characters_are_shown_escaped(
    stack: ServiceProcesses, tmp_path: Path, live: str
) -> None:
    completed = bus(stack.url, "run", live, "--no-cache", "-f", str(hostile(tmp_path)))
    printed = completed.stdout + completed.stderr
    assert completed.returncode == 0, shown(completed)
    for raw in RAW:
        assert raw not in printed, (raw, shown(completed))
    # What the program wrote is still there to read, escaped.
    assert r"before\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x1b[2J\x1b[H" in printed
    assert r"\r\x1b[2Kok  exit 0" in printed
    assert r"\u202eevil\u202c\x9b31m\x7f" in printed
    assert r"err\x1b[31mred\x1b[0m" in printed


def test_json_keeps_the_exact_output(stack: ServiceProcesses, tmp_path: Path) -> None:
    completed = bus(stack.url, "run", "--json", "--no-cache", "-f", str(hostile(tmp_path)))
    assert completed.returncode == 0, shown(completed)
    assert "\x1b" not in completed.stdout  # JSON escapes it
    document = json.loads(completed.stdout.splitlines()[-1])
    assert document["stdout"].startswith("before\x1b]52;c;ZXZpbA==\x07")
    assert "\u202eevil" in document["stdout"]
