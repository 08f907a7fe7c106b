"""Run inside the user-namespaced container of tests/test_containers.py, under
`dcodex up` (the whole stack in the container, on its own loopback): attacks through
a real client, then one JSON line with what happened, for the test to judge."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from dcodex.shared.client import DcodexClient

SHADOW = """
try:
    print(open("/etc/shadow").read()[:40])
except OSError as error:
    print("blocked", error.strerror)
"""
NETWORK = """
import socket
try:
    socket.create_connection(("127.0.0.1", 4222), timeout=2)
    print("open")
except OSError:
    print("blocked")
"""
FORK_BOMB = """
import os
while True:
    os.fork()
"""
C_PROGRAM = '#include <stdio.h>\nint main(void) { printf("ok %d", 6 * 7); return 0; }\n'


UID_MAP = Path("/proc/self/uid_map").read_text().strip()


async def main() -> None:
    async with await DcodexClient.connect(os.environ["DCODEX_NATS_URL"]) as client:
        info = await client.ping(wait_s=1.0)
        runner = next(answer for answer in info if answer["name"] == "dcodex-runner")

        async def run(language: str, code: str) -> str:
            result = await client.execute({"language": language, "code": code})
            return result.stdout.strip() if result.status == "ok" else result.status

        bomb = await client.run({"language": "python", "code": FORK_BOMB})
        report = {
            "uid_map": UID_MAP,
            "layers": runner["metadata"]["isolation"].split(","),
            "c": await run("c", C_PROGRAM),
            "shadow": await run("python", SHADOW),
            "network": await run("python", NETWORK),
            "fork_bomb": bomb.status,
            "after": await run("python", "print(sum(range(10)))"),
        }
    print(json.dumps(report))


asyncio.run(main())
