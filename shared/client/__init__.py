"""The DCodeX Python client: everything a program needs to run code through DCodeX.

    from dcodex.shared.client import DcodexClient

    async with await DcodexClient.connect("nats://127.0.0.1:4222") as client:
        result = await client.execute({"language": "python", "code": "print(1)"})
        judged = await client.judge({"language": "python", "code": "print(input())",
                                     "tests": [{"stdin": "1\n", "expected_output": "1\n"}]})

`SyncDcodexClient` is the same for code without an event loop. The request and reply
models are those of `dcodex.shared.contract`, re-exported here.
"""

from dcodex.shared.bus.connect import ConnectOptions
from dcodex.shared.client._client import DEFAULT_TIMEOUT_S, DcodexClient
from dcodex.shared.client._stream import Event, LiveRun, SignalName
from dcodex.shared.client._sync import SyncDcodexClient, SyncLiveRun
from dcodex.shared.contract import (
    CaseResult,
    ExecuteRequest,
    ExecutionResult,
    JudgeRequest,
    JudgeResult,
    LanguagesReply,
)
from dcodex.shared.errors import DcodexError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CaseResult",
    "ConnectOptions",
    "DcodexClient",
    "DcodexError",
    "Event",
    "ExecuteRequest",
    "ExecutionResult",
    "JudgeRequest",
    "JudgeResult",
    "LanguagesReply",
    "LiveRun",
    "SignalName",
    "SyncDcodexClient",
    "SyncLiveRun",
]
