"""Live output (`stream: true`) and interactive runs (docs/protocol.md), with real programs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
import time
import uuid
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from dcodex.services.runner.interactive import input_feed
from dcodex.shared.client import DcodexClient, Event, LiveRun
from dcodex.shared.contract import ExecutionResult, OutputEvent, ResultEvent
from dcodex.shared.errors import UNAVAILABLE, DcodexError
from dcodex.shared.sandbox.run import LiveInput
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import ServiceProcesses

pytestmark = pytest.mark.bus

TICKS = """
import sys, time
for n in range(3):
    sys.stdout.write(f"{n} {time.time()!r}\\n")
    time.sleep(1)
"""


def unique(code: str, comment: str = "#") -> str:
    """`code` that no earlier test has run: a cache miss."""
    return f"{textwrap.dedent(code)}\n{comment} {uuid.uuid4().hex}\n"


async def collect(run: LiveRun) -> list[Event]:
    return [event async for event in run.events()]


def kinds(events: list[Event]) -> list[str]:
    return [event.type for event in events]


def text_of(events: list[Event], stream: str) -> str:
    return "".join(e.data for e in events if isinstance(e, OutputEvent) and e.type == stream)


# --- streaming -----------------------------------------------------------------------


async def test_each_line_arrives_within_100_ms_of_being_written(client: DcodexClient) -> None:
    lines: list[tuple[float, str]] = []  # when each whole line had arrived, and the line
    pending = ""
    async for event in client.stream({"language": "python", "code": unique(TICKS),
                                      "limits": {"wall_time_s": 6}}):  # fmt: skip
        if isinstance(event, OutputEvent) and event.type == "stdout":
            pending += event.data
            while "\n" in pending:
                line, pending = pending.split("\n", 1)
                lines.append((time.time(), line))
        if isinstance(event, ResultEvent):
            assert event.result.status == "ok"
    assert [line.split()[0] for _, line in lines] == ["0", "1", "2"]
    for arrived, line in lines:
        written = float(line.split()[1])
        assert arrived - written < 0.1, f"line {line!r} took {arrived - written:.3f} s"


async def test_events_are_numbered_without_gaps_compile_first(client: DcodexClient) -> None:
    code = unique('#include <stdio.h>\nint main(void) { puts("one"); fflush(stdout); '
                  'fputs("two\\n", stderr); return 0; }', "//")  # fmt: skip
    async with client.live({"language": "c", "code": code}) as run:
        events = await collect(run)
    assert [event.seq for event in events] == list(range(len(events)))
    assert kinds(events)[:2] == ["compile", "started"] and kinds(events)[-1] == "result"
    assert text_of(events, "stdout") == "one\n" and text_of(events, "stderr") == "two\n"
    assert run.result is not None and run.result.stdout == "one\n"


async def test_the_output_cap_holds_for_streamed_output(client: DcodexClient) -> None:
    code = unique(
        "import sys\nwhile True:\n    print('o' * 99)\n    print('e' * 99, file=sys.stderr)"
    )
    async with client.live(
        {"language": "python", "code": code, "limits": {"output_bytes": 1000}}
    ) as run:
        events = await collect(run)
    result = run.result
    assert result is not None and result.status == "output_limit" and result.output_truncated
    assert text_of(events, "stdout") == result.stdout
    assert text_of(events, "stderr") == result.stderr
    assert len(result.stdout) + len(result.stderr) == 1000


async def test_a_cache_hit_replays_the_same_sequence(client: DcodexClient) -> None:
    request = {
        "language": "c",
        "code": unique('#include <stdio.h>\nint main(void) { puts("hi"); }', "//"),
    }
    async with client.live(request) as first:
        live = await collect(first)
    async with client.live(request) as second:
        replayed = await collect(second)
    assert first.result is not None and not first.result.cache_hit
    assert second.result is not None and second.result.cache_hit
    assert kinds(replayed) == kinds(live) == ["compile", "started", "stdout", "result"]
    assert text_of(replayed, "stdout") == text_of(live, "stdout") == "hi\n"
    assert [event.seq for event in replayed] == [0, 1, 2, 3]


async def test_coalesced_requests_stream_too(client: DcodexClient) -> None:
    code = unique("import sys, time\ntime.sleep(0.5)\nsys.stdout.write('shared\\n')")
    runs = [client.live({"language": "python", "code": code}) for _ in range(3)]
    for run in runs:
        await run.start()
    try:
        streams = await asyncio.gather(*(collect(run) for run in runs))
    finally:
        for run in runs:
            await run.close()
    for events in streams:
        assert kinds(events) == ["started", "stdout", "result"]
        assert text_of(events, "stdout") == "shared\n"
    assert sorted(run.result.cache_hit for run in runs if run.result) == [False, True, True]


# --- interactive runs ------------------------------------------------------------------

PYTHON_QA = """
while True:
    question = input("? ")
    if question == "bye":
        print("goodbye")
        break
    print(f"answer to {question}: {len(question)}")
"""

C_QA = """
#include <stdio.h>
#include <string.h>
int main(void) {
    char line[256];
    for (;;) {
        printf("? ");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) return 1;
        line[strcspn(line, "\\n")] = 0;
        if (strcmp(line, "bye") == 0) { puts("goodbye"); return 0; }
        printf("answer to %s: %zu\\n", line, strlen(line));
        fflush(stdout);
    }
}
"""


async def converse(run: LiveRun, questions: list[str]) -> list[str]:
    """Ask each question once the program prompts, as a person would; the answers."""
    answers: list[str] = []
    seen = ""
    pending = list(questions)
    async for event in run.events():
        if isinstance(event, OutputEvent) and event.type == "stdout":
            seen += event.data
            while "? " in seen:
                before, seen = seen.split("? ", 1)
                answers += [line for line in before.splitlines() if line]
                if pending:
                    await run.send(pending.pop(0) + "\n")
    answers += [line for line in seen.splitlines() if line]
    return answers


@pytest.mark.parametrize(("language", "code"), [("python", PYTHON_QA), ("c", C_QA)])
async def test_a_program_answers_questions_line_by_line(
    client: DcodexClient, language: str, code: str
) -> None:
    async with client.interactive(
        {"language": language, "code": code, "limits": {"wall_time_s": 10}}
    ) as run:
        answers = await converse(run, ["life", "everything", "bye"])
    assert answers == ["answer to life: 4", "answer to everything: 10", "goodbye"]
    assert run.result is not None and run.result.status == "ok"


async def test_eof_ends_the_input(client: DcodexClient) -> None:
    code = "import sys\nprint(len(sys.stdin.read().splitlines()), 'lines')"
    async with client.interactive({"language": "python", "code": code,
                                   "stdin": "first\n"}) as run:  # fmt: skip
        await run.send("second\n")
        await run.send("third\n")
        await run.close_stdin()
        result = await run.wait()
    assert result.stdout == "3 lines\n"


async def signal_once_printed(run: LiveRun, text: str, name: str) -> None:
    """Send signal `name` once the program has printed `text` (in however many chunks)."""
    printed = ""
    async for event in run.events():
        if isinstance(event, OutputEvent) and event.type == "stdout":
            printed += event.data
            if printed == text:
                await run.signal(name)


async def test_sigint_reaches_the_program(client: DcodexClient) -> None:
    code = """
import time

try:
    print("waiting", flush=True)
    time.sleep(10)
except KeyboardInterrupt:
    print("interrupted")
"""
    async with client.interactive({"language": "python", "code": code,
                                   "limits": {"wall_time_s": 10}}) as run:  # fmt: skip
        await signal_once_printed(run, "waiting\n", "SIGINT")
    assert run.result is not None
    assert (run.result.status, run.result.stdout) == ("ok", "waiting\ninterrupted\n")


async def test_sigterm_and_sigkill_end_the_program(client: DcodexClient) -> None:
    code = 'import time\nprint("up", flush=True)\ntime.sleep(10)'
    for name, number in (("SIGTERM", 15), ("SIGKILL", 9)):
        async with client.interactive({"language": "python", "code": code,
                                       "limits": {"wall_time_s": 10}}) as run:  # fmt: skip
            await signal_once_printed(run, "up\n", name)
        assert run.result is not None
        assert (run.result.status, run.result.signal) == ("signaled", number), name


async def test_without_input_a_run_waits_only_until_its_wall_clock(client: DcodexClient) -> None:
    async with client.interactive({"language": "python", "code": "print(input())",
                                   "limits": {"wall_time_s": 0.5}}) as run:  # fmt: skip
        result = await run.wait()
    assert result.status == "wall_time_limit"


async def test_limits_hold_in_interactive_runs(client: DcodexClient) -> None:
    code = "input()\nwhile True:\n    print('x' * 100)"
    async with client.interactive({"language": "python", "code": code,
                                   "limits": {"output_bytes": 500}}) as run:  # fmt: skip
        await run.send("go\n")
        result = await run.wait()
    assert result.status == "output_limit" and len(result.stdout) == 500


async def test_bad_input_events_are_refused_and_the_run_goes_on(client: DcodexClient) -> None:
    async with client.interactive({"language": "python", "code": "print(input())",
                                   "limits": {"wall_time_s": 10}}) as run:  # fmt: skip
        subject = f"dcodex.input.{run.execution_id}"
        async for event in run.events():
            if event.type != "started":
                continue
            for bad in (b"{not json", json.dumps({"type": "stdin"}).encode(),
                        json.dumps({"type": "signal", "signal": "SIGSTOP"}).encode()):  # fmt: skip
                reply = await client.nc.request(subject, bad, timeout=5)
                assert reply.headers and reply.headers.get("Nats-Service-Error-Code") == "400"
            await run.send("still listening\n")
    assert run.result is not None and run.result.stdout == "still listening\n"


def stop_whole(pid: int) -> None:
    """SIGSTOP `pid` and wait until every thread has stopped: `kill` returns before that,
    and under load a nats-server thread can still answer a PING milliseconds later."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = [thread_state(stat) for stat in Path(f"/proc/{pid}/task").glob("*/stat")]
        if states and all(state in "tTX" for state in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop within 10 s")


def thread_state(stat: Path) -> str:
    """The state letter in a thread's /proc stat ('X' when the thread has just exited)."""
    try:
        return stat.read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "X"


async def test_an_input_subscription_nats_does_not_confirm_is_a_503() -> None:
    """A NATS server that stops answering (as one lost mid-election does) while an
    interactive run subscribes to its input: the run does not start (input sent
    meanwhile could miss it) and says 503, to be sent again, not an internal error."""
    with EmbeddedNats() as server:  # stopped by its PID on the way out
        assert server.process is not None and server.url is not None
        nc = await nats.connect(server.url, allow_reconnect=False)
        try:
            stop_whole(server.process.pid)
            try:
                with pytest.raises(DcodexError) as refused:
                    async with input_feed(nc, "dcodex.input.stopped", LiveInput()):
                        raise AssertionError("the run started without its input subscription")
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            assert refused.value.code == UNAVAILABLE
        finally:
            await nc.close()


async def until_started(run: LiveRun) -> None:
    async for event in run.events():
        if event.type == "started":
            return


async def test_input_sent_again_is_acknowledged_and_applied_once(client: DcodexClient) -> None:
    """Each input event sent as a request is acknowledged with `{}`; one whose `seq` the
    run has had (a client sending again after a lost acknowledgement) is not applied."""
    code = "import sys\nprint(sys.stdin.read(), end='')"
    async with client.interactive({"language": "python", "code": code,
                                   "limits": {"wall_time_s": 10}}) as run:  # fmt: skip
        await until_started(run)
        subject = f"dcodex.input.{run.execution_id}"
        a, b, c = ({"type": "stdin", "data": text} for text in ("a\n", "b\n", "c\n"))
        events = [{**a, "seq": 1}, {**a, "seq": 1}, {**b, "seq": 2}, c, {**b, "seq": 2},
                  {"type": "eof", "seq": 3}]  # fmt: skip
        for event in events:
            reply = await client.nc.request(subject, json.dumps(event).encode(), timeout=5)
            assert json.loads(reply.data) == {} and "Nats-Service-Error-Code" not in (
                reply.headers or {}
            )
        result = await run.wait()
    assert result.stdout == "a\nb\nc\n"


async def test_input_arrives_though_the_started_event_is_lost(client: DcodexClient) -> None:
    """The `started` event can be lost (published while a NATS node was lost): the client
    sends its input a second later anyway, and the program gets it once."""
    code = "print(input()[::-1])"
    run = client.interactive({"language": "python", "code": unique(code),
                              "limits": {"wall_time_s": 10}})  # fmt: skip
    deliver = run._on_event

    async def losing_started(msg: Msg) -> None:
        if json.loads(msg.data).get("type") != "started":
            await deliver(msg)

    run._on_event = losing_started  # type: ignore[method-assign]
    async with run:
        await run.send("lost\n")
        await run.close_stdin()
        result = await run.wait()
    assert (result.status, result.stdout) == ("ok", "tsol\n")


def test_input_sent_while_nats_stalls_arrives_once(tmp_path: Path) -> None:
    """A nats-server that stops answering for a while (as one lost mid-election does)
    while a client types: the client gets no acknowledgement, sends the event again,
    and once the server is back the program has it once, and the run ends as it should."""
    with EmbeddedNats() as server:  # stopped by its PID on the way out
        services = ServiceProcesses(server.url, tmp_path)
        try:
            services.start("runner")
            services.wait_ready(("runner",))
            assert server.process is not None
            result = asyncio.run(type_through_a_stall(server.url, server.process.pid))
        finally:
            services.stop_all()
    assert (result.status, result.stdout) == ("ok", "once\n")


async def type_through_a_stall(url: str, server_pid: int) -> ExecutionResult:
    code = "import sys\nprint(sys.stdin.read(), end='')"
    async with (
        await DcodexClient.connect(url) as client,
        client.interactive(
            {"language": "python", "code": code, "limits": {"wall_time_s": 20}}, via="run"
        ) as run,
    ):
        await until_started(run)
        stop_whole(server_pid)
        try:
            sending = asyncio.ensure_future(run.send("once\n"))
            await asyncio.sleep(1.8)  # unacknowledged past 1 s: sent again meanwhile
            assert not sending.done()
        finally:
            os.kill(server_pid, signal.SIGCONT)
        await sending
        await run.close_stdin()
        return await run.wait()
