"""Through a real stack: C programs at the default limits compile in warm compile
sandboxes (`--warm-compiles`) and run in warm native ones (`--warm-native`), and a user
sees what a cold run gives."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from dcodex.shared.client import DcodexClient
from tests.conftest import ServiceProcesses

pytestmark = [pytest.mark.bus, pytest.mark.root]

ECHO_C = """
#warning "careful"
#include <stdio.h>
int main(int argc, char **argv) {
    char line[64];
    if (fgets(line, sizeof line, stdin)) printf("%s %s", argc > 1 ? argv[1] : "-", line);
    return argc > 2 ? 5 : 0;
}
"""


async def test_compiled_runs_take_warm_native_sandboxes(
    client: DcodexClient, stack: ServiceProcesses
) -> None:
    ours = set()
    compiles_before = len(_requests(stack, "compiler"))
    for n in range(6):
        code = f"{ECHO_C}// {uuid.uuid4()}\n"  # new code: compiled, then run
        result = await client.run(
            {"language": "c", "code": code, "stdin": f"line {n}\n", "args": ["arg"]}
        )
        assert (result.status, result.stdout, result.exit_code) == ("ok", f"arg line {n}\n", 0)
        # The compile's facts come along, as with a cold run (its diagnostics: the warning).
        assert result.compile_time_ms is not None and "careful" in result.compile_output
        ours.add(result.execution_id)
    failed = await client.run({"language": "c", "code": ECHO_C, "stdin": "x\n", "args": ["a", "b"]})
    assert (failed.status, failed.exit_code, failed.stdout) == ("runtime_error", 5, "a x\n")
    runs = [
        line.get("sandbox", "cold")
        for line in _requests(stack, "runner")
        if line.get("execution_id") in ours
    ]
    compiles = [
        line.get("sandbox", "cold")
        for line in _requests(stack, "compiler")[compiles_before:]
        if line.get("language") == "c"
    ]
    # One after the other, each finds the next warm sandbox started (or at worst, the
    # first after a cold start of the stack goes the cold way).
    assert len(runs) == 6 and runs.count("warm") >= 5, runs
    assert len(compiles) == 7 and compiles.count("warm") >= 6, compiles  # and the failing one


def _requests(stack: ServiceProcesses, service: str) -> list[dict[str, Any]]:
    """The request lines of the first `service` process of the stack, in order."""
    lines = [json.loads(line) for line in stack.log(service).splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request"]
