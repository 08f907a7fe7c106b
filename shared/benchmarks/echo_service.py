"""A NATS service at its barest, for the benchmark's row N: run as
`python -m dcodex.shared.benchmarks.echo_service URL SUBJECT SIZE`, it answers every
request on SUBJECT with SIZE bytes and the request's headers (a hit's reply has the same
two), does nothing else, and says "ready" once it listens. Connected as the benchmark's
client is (the `DCODEX_NATS_*` variables: credentials, TLS)."""

from __future__ import annotations

import asyncio
import sys

from nats.aio.msg import Msg

from dcodex.shared.client import DcodexClient


async def serve(url: str, subject: str, size: int) -> None:
    nc = (await DcodexClient.connect(url)).nc
    reply = b"x" * size

    async def echo(message: Msg) -> None:
        await message.respond(reply)  # with the request's headers, as nats-py does

    await nc.subscribe(subject, cb=echo)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], int(sys.argv[3])))
