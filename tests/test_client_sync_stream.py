"""Live output and interactive runs from code without an event loop (`SyncDcodexClient`)."""

from __future__ import annotations

import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.shared.client import Event, SyncDcodexClient, SyncLiveRun
from dcodex.shared.contract import OutputEvent, ResultEvent
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import ServiceProcesses

pytestmark = pytest.mark.bus

# Asks until told "done": each question is a line of numbers, each answer their sum.
ADDER = """
while True:
    line = input("numbers? ")
    if line == "done":
        print("bye")
        break
    print("sum", sum(int(word) for word in line.split()))
"""

COUNTER = """
import sys

lines = sys.stdin.read().splitlines()
print(len(lines), "lines:", ",".join(lines))
"""


def unique(code: str) -> str:
    """`code` that no earlier run has sent: not answered from the cache."""
    return f"{textwrap.dedent(code)}\n# {uuid.uuid4().hex}\n"


def stdout_of(events: list[Event]) -> str:
    return "".join(e.data for e in events if isinstance(e, OutputEvent) and e.type == "stdout")


@pytest.fixture
def sync_client(stack: ServiceProcesses) -> Iterator[SyncDcodexClient]:
    with SyncDcodexClient.connect(stack.url) as client:
        yield client


def test_stream_yields_every_event_in_order_the_result_last(
    sync_client: SyncDcodexClient,
) -> None:
    code = unique("import sys\nfor n in range(3):\n    print(n, flush=True)\nsys.exit(3)")
    events = list(sync_client.stream({"language": "python", "code": code}))
    assert events[0].type == "started"
    assert isinstance(events[-1], ResultEvent)
    assert not any(isinstance(event, ResultEvent) for event in events[:-1])
    seqs = [event.seq for event in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    result = events[-1].result
    assert (result.status, result.exit_code) == ("runtime_error", 3)
    assert stdout_of(events) == result.stdout == "0\n1\n2\n"


def test_stream_direct_to_a_runner_and_leaving_early(sync_client: SyncDcodexClient) -> None:
    code = unique("print('first')\nprint('second')")
    for event in sync_client.stream({"language": "python", "code": code}, via="run"):
        if event.type == "started":
            break  # stops listening; the client goes on working
    result = sync_client.execute({"language": "python", "code": "print(6 * 7)"})
    assert result.stdout == "42\n"
    events = list(sync_client.stream({"language": "python", "code": code}, via="run"))
    assert isinstance(events[-1], ResultEvent) and events[-1].result.stdout == "first\nsecond\n"
    assert not events[-1].result.cache_hit, "dcodex.run bypasses the cache"


def test_stream_of_a_bad_request_raises_its_error(sync_client: SyncDcodexClient) -> None:
    with pytest.raises(DcodexError) as raised:
        list(sync_client.stream({"language": "klingon", "code": "Qapla'"}))
    assert raised.value.code == 404


def converse(run: SyncLiveRun, questions: list[str]) -> list[str]:
    """Answer each prompt with the next question once it is shown, as a person would."""
    pending, seen, lines = list(questions), "", []
    for event in run.events():
        if isinstance(event, OutputEvent) and event.type == "stdout":
            seen += event.data
            while "numbers? " in seen:
                before, seen = seen.split("numbers? ", 1)
                lines += before.splitlines()
                run.send(pending.pop(0) + "\n")  # the program waits for this line
    return [line for line in [*lines, *seen.splitlines()] if line]


def test_interactive_program_answers_questions_read_from_stdin(
    sync_client: SyncDcodexClient,
) -> None:
    request = {"language": "python", "code": unique(ADDER), "limits": {"wall_time_s": 10}}
    with sync_client.interactive(request) as run:
        answers = converse(run, ["1 2", "40 2", "done"])
        assert run.result is not None
    assert answers == ["sum 3", "sum 42", "bye"]
    expected = "numbers? sum 3\nnumbers? sum 42\nnumbers? bye\n"
    assert (run.result.status, run.result.stdout) == ("ok", expected)


def test_interactive_input_then_eof_then_wait(sync_client: SyncDcodexClient) -> None:
    request = {"language": "python", "code": unique(COUNTER), "stdin": "a\n"}
    with sync_client.interactive(request) as run:
        run.send("b\n")
        run.send("c\n")
        run.close_stdin()
        result = run.wait()
    assert (result.status, result.stdout) == ("ok", "3 lines: a,b,c\n")
    assert run.result == result and run.execution_id == result.execution_id


def test_interactive_events_read_in_another_thread(sync_client: SyncDcodexClient) -> None:
    request = {"language": "python", "code": unique(ADDER), "limits": {"wall_time_s": 10}}
    events: list[Event] = []
    with sync_client.interactive(request) as run:
        reader = threading.Thread(target=lambda: events.extend(run.events()))
        reader.start()
        for line in ("5 5", "7 8 9", "done"):  # queued on stdin until the program reads it
            run.send(line + "\n")
        reader.join(timeout=30)
    assert not reader.is_alive()
    assert isinstance(events[-1], ResultEvent) and events[-1].result.status == "ok"
    assert stdout_of(events) == "numbers? sum 10\nnumbers? sum 24\nnumbers? bye\n"


def test_interactive_signal_reaches_the_program(sync_client: SyncDcodexClient) -> None:
    code = """
    import time
    try:
        print("waiting", flush=True)
        time.sleep(10)
    except KeyboardInterrupt:
        print("interrupted")
    """
    request = {"language": "python", "code": unique(code), "limits": {"wall_time_s": 10}}
    printed = ""  # output may come in chunks of any size
    with sync_client.interactive(request) as run:
        for event in run.events():
            if isinstance(event, OutputEvent) and event.type == "stdout":
                printed += event.data
                if printed == "waiting\n":
                    run.signal("SIGINT")
        assert run.result is not None
    assert (run.result.status, run.result.stdout) == ("ok", "waiting\ninterrupted\n")


def test_a_live_run_gives_its_events_then_its_result(sync_client: SyncDcodexClient) -> None:
    code = unique("for n in range(3):\n    print(n, flush=True)")
    with sync_client.live({"language": "python", "code": code}) as run:
        events = list(run.events())
        result = run.wait()
    assert stdout_of(events) == "0\n1\n2\n" == result.stdout
    assert isinstance(events[-1], ResultEvent) and events[-1].result == result
    assert run.execution_id == result.execution_id


def test_live_and_interactive_runs_straight_to_a_runner(tmp_path: Path) -> None:
    """`via="run"`: on a bus with a runner and no cache at all, both still run."""
    with EmbeddedNats() as server:  # stopped by its PID on the way out
        services = ServiceProcesses(server.url, tmp_path)
        try:
            services.start("runner")
            services.wait_ready(("runner",))
            with SyncDcodexClient.connect(server.url) as client:
                request = {"language": "python", "code": unique("print('straight')")}
                with client.live(request, via="run") as run:
                    streamed = run.wait()
                request = {"language": "python", "code": unique(COUNTER), "stdin": "a\n"}
                with client.interactive(request, via="run") as run:
                    run.send("b\n")
                    run.close_stdin()
                    typed = run.wait()
        finally:
            services.stop_all()
    assert (streamed.status, streamed.stdout) == ("ok", "straight\n")
    assert (typed.status, typed.stdout) == ("ok", "2 lines: a,b\n")
