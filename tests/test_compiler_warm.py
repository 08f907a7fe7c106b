"""Warm compiles: a compile in a sandbox set up ahead of it (`--warm-compiles`) gives what
a cold compile gives: the same program, the same diagnostics, the same failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dcodex.services.compiler.compile import Compilation, compile_source, warm_compile_spec
from dcodex.services.compiler.headers import PrecompiledHeaders
from dcodex.services.compiler.pch import HeaderStore
from dcodex.shared.languages.probe import probe_registry
from dcodex.shared.languages.registry import PCH_HEADER, Language, Registry
from dcodex.shared.sandbox.slots import SlotPool, open_slot_pool
from dcodex.shared.sandbox.warm import WarmPool, start_warm_pool
from dcodex.shared.service.config import Settings
from tests.test_sandbox_warm import take_started

# Sandboxes on slots of their own: a uid per slot and its cgroups need root.
pytestmark = pytest.mark.root

MiB = 2**20
SETTINGS = Settings()
UID_BASE = 62500  # this module's slots, apart from the services' and other tests'

SOURCES = {
    "hello": '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n',
    "warning": '#warning "careful"\n#include <stdio.h>\nint main(void) { puts("w"); }\n',
    "error": "int main(void) { return nope; }\n",
    "no main": "int helper(void) { return 1; }\n",
    "include a host file": '#include "/etc/shadow"\nint main(void) {}\n',
}


@pytest.fixture(scope="module")
def languages() -> dict[str, Language]:
    registry = asyncio.run(probe_registry(Registry.load()))
    return {name: registry.resolve(name) for name in ("c", "cpp")}


@pytest.fixture
async def pools(languages: dict[str, Language]) -> AsyncIterator[tuple[SlotPool, WarmPool]]:
    slots = await open_slot_pool(
        "strict", size=1, uid_base=UID_BASE, disk_bytes=64 * MiB, max_queued=None,
        service="cwtest",
    )  # fmt: skip
    spec = warm_compile_spec(languages["c"], SETTINGS)
    warm = start_warm_pool(
        spec, 1, isolation=slots.isolation, uid_base=UID_BASE + 10, service="cwwarm",
        languages=["c", "cpp"],
    )  # fmt: skip
    try:
        yield slots, warm
    finally:
        warm.close()
        slots.close()


async def both(
    pools: tuple[SlotPool, WarmPool], language: Language, code: str
) -> tuple[Compilation, Compilation]:
    slots, warm = pools
    options = language.options(None, None)
    async with slots.acquire() as slot:
        cold = await compile_source(language, code, SETTINGS, slot, options)
        taken = await take_started(warm)
        hot = await compile_source(language, code, SETTINGS, slot, options, warm=taken)
    return cold, hot


@pytest.mark.parametrize("name", sorted(SOURCES))
async def test_a_warm_compile_is_a_cold_compile(
    pools: tuple[SlotPool, WarmPool], languages: dict[str, Language], name: str
) -> None:
    cold, hot = await both(pools, languages["c"], SOURCES[name])
    assert (hot.ok, hot.output, hot.binary) == (cold.ok, cold.output, cold.binary)
    assert hot.ok == (name in ("hello", "warning")), hot.output
    if name == "warning":
        assert "careful" in hot.output
    if name == "include a host file":
        assert "No such file or directory" in hot.output  # /etc is not in the sandbox


async def test_cpp_without_a_precompiled_header_compiles_warm_too(
    pools: tuple[SlotPool, WarmPool], languages: dict[str, Language]
) -> None:
    code = '#include <iostream>\nint main() { std::cout << "hi\\n"; }\n'
    cold, hot = await both(pools, languages["cpp"], code)
    assert hot.ok and hot.binary == cold.binary and hot.output == cold.output == ""


async def test_cpp_with_a_precompiled_header_compiles_warm_and_uses_it(
    languages: dict[str, Language], tmp_path: Path
) -> None:
    """A warm sandbox shows the headers' store: a compile uses a header built after the
    sandbox was set up. The header's text is then made an `#error`: the compile
    succeeds with the header's build (the .gch, which gcc takes in its place), and
    fails once that is gone: it was given the header, and took its build."""
    cpp = languages["cpp"]
    options = cpp.options(None, None)
    code = '#include <iostream>\nint main() { std::cout << "hi\\n"; }\n'
    slots = await open_slot_pool(
        "strict", size=1, uid_base=UID_BASE + 20, disk_bytes=64 * MiB, max_queued=None,
        service="cwpch",
    )  # fmt: skip
    store = HeaderStore(4, tmp_path / "pch")
    assert store.usable()
    spec = warm_compile_spec(cpp, SETTINGS, store.root)
    warm = start_warm_pool(
        spec, 1, isolation=slots.isolation, uid_base=UID_BASE + 30, service="cwpchwarm",
        languages=["cpp"],
    )  # fmt: skip
    try:
        headers = PrecompiledHeaders(SETTINGS, slots, store)
        assert headers.for_source(cpp, options, code) is None  # its build starts
        await headers.wait_built()
        entry = headers.for_source(cpp, options, code)
        assert entry is not None
        async with slots.acquire() as slot:
            cold = await compile_source(cpp, code, SETTINGS, slot, options)
            header = entry / PCH_HEADER
            header.chmod(0o644)
            header.write_text('#error "the header was read, not its build"\n')
            hot = await compile_source(
                cpp, code, SETTINGS, slot, options, entry, warm=await take_started(warm)
            )
            (entry / f"{PCH_HEADER}.gch").unlink()
            unbuilt = await compile_source(
                cpp, code, SETTINGS, slot, options, entry, warm=await take_started(warm)
            )
    finally:
        warm.close()
        slots.close()
    assert hot.ok, hot.output
    assert hot.binary == cold.binary and hot.output == cold.output == ""
    assert not unbuilt.ok and "the header was read, not its build" in unbuilt.output


def test_warm_compiles_serve_only_what_looks_the_same_to_the_compiler(
    languages: dict[str, Language],
) -> None:
    c, cpp = languages["c"], languages["cpp"]
    assert warm_compile_spec(c, SETTINGS) == warm_compile_spec(cpp, SETTINGS)
    go = Registry.load().resolve("go")
    assert warm_compile_spec(go, SETTINGS) != warm_compile_spec(c, SETTINGS), "its environment"
