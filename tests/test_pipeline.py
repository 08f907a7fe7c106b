"""End to end through `dcodex.execute`: cache → runner → compiler on a real NATS."""

from __future__ import annotations

import json
import signal
import uuid
from typing import Any

import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult

pytestmark = pytest.mark.bus


MiB = 1024 * 1024


def unique(code: str) -> str:
    """The code with a comment that makes its cache key new for this test run."""
    marker = uuid.uuid4().hex
    return f"{code}\n// {marker}\n" if "#include" in code else f"{code}\n# {marker}\n"


async def execute(
    client: DcodexClient, language: str, code: str, **fields: object
) -> ExecutionResult:
    return await client.execute({"language": language, "code": unique(code), **fields})


async def test_python_ok_with_stdin(client: DcodexClient) -> None:
    result = await execute(client, "python", "print(input()[::-1])", stdin="olleh\n")
    assert result.status == "ok"
    assert result.stdout == "hello\n"
    assert result.exit_code == 0 and result.signal is None
    assert result.language == "python" and result.language_version.startswith("python 3")
    assert result.compile_time_ms is None
    assert result.cpu_time_ms > 0 and result.wall_time_ms > 0


async def test_c_reads_stdin_and_args(client: DcodexClient) -> None:
    code = """#include <stdio.h>
int main(int argc, char **argv) {
    int a, b;
    if (scanf("%d %d", &a, &b) != 2) return 1;
    printf("%s %d\\n", argv[1], a + b);
    return 0;
}"""
    result = await execute(client, "c", code, stdin="2 40\n", args=["sum"])
    assert result.status == "ok", result
    assert result.stdout == "sum 42\n"
    assert result.compile_time_ms is not None and result.compile_time_ms > 0
    assert result.language_version.startswith("gcc ")


async def test_cpp_alias_and_case(client: DcodexClient) -> None:
    code = '#include <iostream>\nint main() { std::cout << "hi from c++" << std::endl; }'
    result = await execute(client, "C++", code)
    assert result.status == "ok"
    assert result.language == "cpp"
    assert result.stdout == "hi from c++\n"


async def test_runtime_error_keeps_exit_code_and_stderr(client: DcodexClient) -> None:
    result = await execute(
        client, "python", "import sys\nprint('bye', file=sys.stderr)\nsys.exit(7)"
    )
    assert result.status == "runtime_error"
    assert result.exit_code == 7
    assert result.stderr == "bye\n"


async def test_segfault_is_signaled(client: DcodexClient) -> None:
    code = "#include <stdio.h>\nint main(void) { volatile int *p = 0; *p = 1; return 0; }"
    result = await execute(client, "c", code)
    assert result.status == "signaled"
    assert result.signal == signal.SIGSEGV
    assert result.exit_code is None


async def test_abort_is_signaled(client: DcodexClient) -> None:
    result = await execute(client, "cpp", "#include <cstdlib>\nint main() { std::abort(); }")
    assert result.status == "signaled"
    assert result.signal == signal.SIGABRT


async def test_compile_error_has_diagnostics(client: DcodexClient) -> None:
    result = await execute(
        client, "c", "#include <stdio.h>\nint main(void) { return undefined_name; }"
    )
    assert result.status == "compile_error"
    assert "undefined_name" in result.compile_output
    assert "error" in result.compile_output
    assert result.stdout == "" and result.exit_code is None


async def test_busy_loop_hits_cpu_limit(client: DcodexClient) -> None:
    result = await execute(client, "python", "while True:\n    pass", limits={"cpu_time_s": 0.5})
    assert result.status == "cpu_time_limit"
    assert result.cpu_time_ms >= 450
    assert result.wall_clock_timeout is False


async def test_sleeping_program_hits_wall_clock(client: DcodexClient) -> None:
    code = "import time\nprint('going to sleep', flush=True)\ntime.sleep(30)"
    result = await execute(client, "python", code, limits={"wall_time_s": 1})
    assert result.status == "wall_time_limit"
    assert result.wall_clock_timeout is True
    assert result.stdout == "going to sleep\n"
    assert 900 <= result.wall_time_ms < 5000
    assert result.cpu_time_ms < 500


async def test_allocation_past_memory_limit(client: DcodexClient) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(b'x' * (8 * 1024 * 1024))"
    result = await execute(client, "python", code, limits={"memory_bytes": 128 * MiB})
    assert result.status == "memory_limit"
    assert "MemoryError" in result.stderr


async def test_c_allocation_past_memory_limit(client: DcodexClient) -> None:
    code = """#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    for (;;) {
        char *block = malloc(8 << 20);
        if (!block) { perror("malloc"); return 1; }
        memset(block, 1, 8 << 20);
    }
}"""
    result = await execute(client, "c", code, limits={"memory_bytes": 64 * MiB})
    assert result.status == "memory_limit"


async def test_output_flood_is_capped(client: DcodexClient) -> None:
    code = "i = 0\nwhile True:\n    print('line', i)\n    i += 1"
    result = await execute(client, "python", code, limits={"output_bytes": 2000})
    assert result.status == "output_limit"
    assert result.output_truncated is True
    assert len(result.stdout.encode()) + len(result.stderr.encode()) == 2000
    assert result.stdout.startswith("line 0\nline 1\n")


async def test_non_utf8_output_is_replaced(client: DcodexClient) -> None:
    code = "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')"
    result = await execute(client, "python", code)
    assert result.status == "ok"
    assert result.stdout == "ok \ufffd\ufffd end\n"


async def test_second_identical_request_is_a_cache_hit(client: DcodexClient) -> None:
    request = {"language": "python", "code": unique("print(input())"), "stdin": "one\n"}
    first = await client.execute(request)
    second = await client.execute(request)
    assert first.cache_hit is False and second.cache_hit is True
    assert second.stdout == first.stdout == "one\n"
    assert second.execution_id != first.execution_id
    changed = await client.execute({**request, "stdin": "two\n"})
    assert changed.cache_hit is False
    assert changed.stdout == "two\n"


async def test_cache_false_neither_reads_nor_writes(client: DcodexClient) -> None:
    request = {"language": "python", "code": unique("print(1)"), "cache": False}
    assert (await client.execute(request)).cache_hit is False
    assert (await client.execute(request)).cache_hit is False
    assert (await client.execute({**request, "cache": True})).cache_hit is False


async def test_wall_time_results_are_not_cached(client: DcodexClient) -> None:
    request = {
        "language": "python",
        "code": unique("import time\ntime.sleep(5)"),
        "limits": {"wall_time_s": 0.5},
    }
    assert (await client.execute(request)).status == "wall_time_limit"
    again = await client.execute(request)
    assert again.status == "wall_time_limit" and again.cache_hit is False


async def test_execution_id_is_kept(client: DcodexClient) -> None:
    result = await execute(client, "python", "print(2)", execution_id="my-run_01")
    assert result.execution_id == "my-run_01"


async def test_same_source_compiles_once(client: DcodexClient) -> None:
    # An unused function parameter warns under -Wall... the default flags have no -Wall,
    # so the warning comes from a #warning directive, which gcc always prints.
    code = unique(
        '#include <stdio.h>\n#warning "kept"\nint main(void) { puts("reused"); return 0; }'
    )
    first = await client.compile("c", code)
    second = await client.compile("c", code)
    assert first.status == "ok" and first.cached is False and first.compile_time_ms
    assert second.cached is True and second.compile_time_ms is None
    assert second.artifact == first.artifact and first.artifact is not None
    assert "kept" in first.compile_output
    assert second.compile_output == first.compile_output, "warnings survive artifact reuse"
    assert first.artifact.size > 0
    # The runner finds the same artifact: no compile time in the execution result.
    result = await client.execute({"language": "c", "code": code, "cache": False})
    assert result.status == "ok" and result.stdout == "reused\n"
    assert result.compile_time_ms is None


async def test_internal_error_when_an_artifact_is_corrupt(client: DcodexClient) -> None:
    """A broken artifact in the store is the runner's failure, not the program's."""
    from dataclasses import replace

    from dcodex.shared.languages.registry import Registry
    from dcodex.shared.service.artifacts import compile_digest, open_artifact_store

    code = unique("int main(void) { return 0; }")
    versions = {lang.id: lang.version for lang in (await client.languages()).languages}
    language = replace(Registry.load().resolve("c"), version=versions["c"])
    digest = compile_digest(language, code)
    store = await open_artifact_store(client.nc.jetstream())
    await store.put(digest, b"this is not an executable")
    result = await client.execute({"language": "c", "code": code})
    assert result.status == "internal_error"
    assert "internal error" in result.stderr
    again = await client.execute({"language": "c", "code": code})
    assert again.cache_hit is False, "internal errors are never cached"


@pytest.mark.parametrize("count", [6])
async def test_concurrent_runs_do_not_mix(client: DcodexClient, count: int) -> None:
    import asyncio

    tokens = [uuid.uuid4().hex for _ in range(count)]
    results = await asyncio.gather(
        *(
            client.execute(
                {"language": "python", "code": f"import time\ntime.sleep(0.2)\nprint('{token}')"}
            )
            for token in tokens
        )
    )
    assert [r.stdout for r in results] == [f"{token}\n" for token in tokens]


async def test_stream_publishes_numbered_events_then_the_result(client: DcodexClient) -> None:
    execution_id = f"stream-{uuid.uuid4().hex[:12]}"
    subscription = await client.nc.subscribe(f"dcodex.output.{execution_id}")
    code = (
        '#include <stdio.h>\nint main(void) { puts("one"); fflush(stdout); puts("two"); return 0; }'
    )
    result = await execute(client, "c", code, stream=True, execution_id=execution_id)
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != "result":
        events.append(json.loads((await subscription.next_msg(timeout=5)).data))
    await subscription.unsubscribe()
    assert [event["seq"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events][:2] == ["compile", "started"]
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "one\ntwo\n"
    assert events[-1]["result"] == result.model_dump(mode="json")


async def test_output_up_to_the_ceiling_is_returned(client: DcodexClient) -> None:
    ceiling = (await client.languages()).limits.ceilings.output_bytes
    code = f"import sys\nsys.stdout.write('x' * {ceiling})"
    result = await execute(client, "python", code, limits={"output_bytes": ceiling})
    assert result.status == "ok"
    assert len(result.stdout) == ceiling and result.output_truncated is False


async def test_a_reply_too_large_for_nats_is_a_clear_error(client: DcodexClient) -> None:
    """NUL bytes escape to 6 bytes each in JSON: the reply outgrows NATS's max payload."""
    from dcodex.shared.errors import DcodexError

    ceiling = (await client.languages()).limits.ceilings.output_bytes
    code = f"import sys\nsys.stdout.write(chr(0) * {ceiling})"
    with pytest.raises(DcodexError) as raised:
        await execute(client, "python", code, limits={"output_bytes": ceiling})
    assert raised.value.code == 500
    assert "max payload" in raised.value.message
    assert (await execute(client, "python", "print('still here')")).stdout == "still here\n"
