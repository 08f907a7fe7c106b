"""Warm compiles: a compile in a sandbox set up ahead of it (`--warm-compiles`) gives what
a cold compile gives: the same program, the same diagnostics, the same failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dcodex.services.compiler.compile import Compilation, compile_source, warm_compile_spec
from dcodex.shared.languages.probe import probe_registry
from dcodex.shared.languages.registry import Language, Registry
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


def test_warm_compiles_serve_only_what_looks_the_same_to_the_compiler(
    languages: dict[str, Language],
) -> None:
    c, cpp = languages["c"], languages["cpp"]
    assert warm_compile_spec(c, SETTINGS) == warm_compile_spec(cpp, SETTINGS)
    go = Registry.load().resolve("go")
    assert warm_compile_spec(go, SETTINGS) != warm_compile_spec(c, SETTINGS), "its environment"
