"""Through a real runner: compiled C and C++ programs at the default limits run in warm
native sandboxes (`--warm-native`), and a user sees what a cold run gives."""

from __future__ import annotations

import json

import pytest

from dcodex.shared.client import DcodexClient
from tests.conftest import ServiceProcesses

pytestmark = [pytest.mark.bus, pytest.mark.root]

ECHO_C = """
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
    for n in range(6):
        result = await client.run(
            {"language": "c", "code": ECHO_C, "stdin": f"line {n}\n", "args": ["arg"]}
        )
        assert (result.status, result.stdout, result.exit_code) == ("ok", f"arg line {n}\n", 0)
        ours.add(result.execution_id)
    failed = await client.run({"language": "c", "code": ECHO_C, "stdin": "x\n", "args": ["a", "b"]})
    assert (failed.status, failed.exit_code, failed.stdout) == ("runtime_error", 5, "a x\n")
    lines = [json.loads(line) for line in stack.log("runner").splitlines() if line.startswith("{")]
    sandboxes = [
        line.get("sandbox", "cold")
        for line in lines
        if line.get("event") == "request" and line.get("execution_id") in ours
    ]
    assert len(sandboxes) == 6, sandboxes
    # One after the other, each finds the next warm sandbox started (or at worst, the
    # first after a cold start of the stack goes the cold way).
    assert sandboxes.count("warm") >= 5, sandboxes
