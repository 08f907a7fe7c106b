"""Compiles are sandboxed like programs: no file or environment of the host leaks out
through diagnostics or artifacts, and every compile limit is a clean, named compile error.

One compiler process with small limits and a secret in its own environment serves
this module under the prefix `esc`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.shared import bus
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import CompileResult
from tests.conftest import ServiceProcesses, wait_for_subject

pytestmark = pytest.mark.bus


SECRET_VAR = "DCODEX_TEST_COMPILER_SECRET"
TOKEN = secrets.token_hex(16)
LIMITS = {
    "--compile-timeout-seconds": "3",
    "--compile-memory-limit-bytes": str(256 * 2**20),
    "--max-compile-output-bytes": "4000",
    "--max-artifact-bytes": "200000",
}


@pytest.fixture(scope="module")
def secret_file() -> Iterator[Path]:
    """A file only root may read, like /etc/shadow, holding the token."""
    fd, name = tempfile.mkstemp(prefix="dcodex-secret-")
    os.write(fd, f"secret-line {TOKEN}\n".encode())
    os.close(fd)
    os.chmod(name, 0o600)
    yield Path(name)
    os.unlink(name)


@pytest.fixture(scope="module")
def compiler(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcesses]:
    args = ("--subject-prefix", "esc", *(word for pair in LIMITS.items() for word in pair))
    services = ServiceProcesses(nats_url, tmp_path_factory.mktemp("esc"), args)
    os.environ[SECRET_VAR] = TOKEN  # inherited by the compiler process only
    try:
        services.start("compiler")
    finally:
        del os.environ[SECRET_VAR]
    try:
        asyncio.run(wait_for_subject(nats_url, "esc.compile"))
        yield services
    finally:
        services.stop_all()


async def compile_code(url: str, language: str, code: str) -> CompileResult:
    async with await DcodexClient.connect(url) as client:
        reply = await bus.request(
            client.nc,
            "esc.compile",
            {"language": language, "code": code},
            request_id=bus.new_id(),
            timeout=30,
        )
    return CompileResult.model_validate(reply)


def shadow_lines() -> list[str]:
    return [line for line in Path("/etc/shadow").read_text().splitlines() if len(line) > 8]


def assert_no_leak(result: CompileResult) -> None:
    assert TOKEN not in result.compile_output
    assert not any(line in result.compile_output for line in shadow_lines())


@pytest.mark.parametrize(
    "code",
    [
        '#include "/etc/shadow"\nint main(void) { return 0; }\n',
        '#include "{secret}"\nint main(void) { return 0; }\n',
        '#include "/proc/{pid}/environ"\nint main(void) { return 0; }\n',
        '__asm__(".incbin \\"{secret}\\"");\nint main(void) { return 0; }\n',
        '__asm__(".incbin \\"/etc/shadow\\"");\nint main(void) { return 0; }\n',
    ],
    ids=[
        "include-shadow",
        "include-secret",
        "include-service-environ",
        "incbin-secret",
        "incbin-shadow",
    ],
)
async def test_files_the_sandbox_may_not_read_stay_unread(
    compiler: ServiceProcesses, secret_file: Path, code: str
) -> None:
    pid = compiler.processes["compiler"][0].pid
    source = code.replace("{secret}", str(secret_file)).replace("{pid}", str(pid))
    result = await compile_code(compiler.url, "c", source)
    assert result.status == "compile_error" and result.artifact is None
    # The compiler names the file it could not read (permission denied, or not even
    # visible) and says nothing of what it holds.
    named = {"shadow": "/etc/shadow", "{secret}": secret_file.name, "environ": f"/proc/{pid}/"}
    assert any(key in code and text in result.compile_output for key, text in named.items())
    assert_no_leak(result)


async def test_a_compile_over_the_wall_clock_is_a_named_compile_error(
    compiler: ServiceProcesses,
) -> None:
    # Reading the compiler's own output pipe blocks: no CPU, no memory, only time.
    result = await compile_code(compiler.url, "c", '#include "/proc/self/fd/1"\n')
    assert result.status == "compile_error"
    assert result.compile_output.endswith("[dcodex] compilation timed out after 3 s\n")


async def test_a_compile_over_the_memory_limit_is_a_named_compile_error(
    compiler: ServiceProcesses,
) -> None:
    result = await compile_code(compiler.url, "c", '#include "/dev/zero"\n')
    assert result.status == "compile_error"
    limit = LIMITS["--compile-memory-limit-bytes"]
    assert f"[dcodex] the compiler ran out of memory (limit {limit} bytes" in result.compile_output


async def test_diagnostics_over_their_cap_are_cut_and_named(compiler: ServiceProcesses) -> None:
    code = "".join(f"int v{i} = undefined_{i};\n" for i in range(2000))
    result = await compile_code(compiler.url, "c", code)
    assert result.status == "compile_error"
    kept, note = result.compile_output.rsplit("[dcodex] ", 1)
    assert note == "compiler output exceeded 4000 bytes\n"
    assert "undefined_0" in kept and len(kept.encode()) <= 4000 + 1


async def test_a_program_over_the_artifact_cap_is_a_named_compile_error(
    compiler: ServiceProcesses,
) -> None:
    code = "char big[300000] = {[0 ... 299999] = 1};\nint main(void) { return big[7] - 1; }\n"
    result = await compile_code(compiler.url, "c", code)
    assert result.status == "compile_error" and result.artifact is None
    assert "[dcodex] the program would be larger than 200000 bytes" in result.compile_output


async def test_the_compiler_keeps_serving_after_every_limit(compiler: ServiceProcesses) -> None:
    result = await compile_code(compiler.url, "c", "int main(void) { return 0; }\n")
    assert result.status == "ok" and result.artifact is not None
