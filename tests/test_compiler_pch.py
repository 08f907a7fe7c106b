"""C++ precompiled headers: when a source may use one, the bounded store, and that a
compile with one gives the same program as a compile without."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dcodex.services.compiler.compile import compile_source
from dcodex.services.compiler.headers import PrecompiledHeaders
from dcodex.services.compiler.pch import HeaderStore, leading_headers
from dcodex.services.compiler.service import UID_OFFSET
from dcodex.shared.languages.probe import probe_registry
from dcodex.shared.languages.registry import PCH_HEADER, Registry
from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.service.config import Settings

HELLO = (
    "// greet\n#include <iostream>\n#include <string>\n"
    'int main() { std::cout << std::string("hi") << "\\n"; }\n'
)
# `count` would be ambiguous with std::count had <algorithm> been forced in: the header
# must hold exactly the source's own includes.
OWN_COUNT = (
    "#include <cstdio>\nusing namespace std;\nint count = 3;\n"
    'int main() { printf("%d\\n", count); }\n'
)


@pytest.mark.parametrize(
    ("code", "headers"),
    [
        (HELLO, ("iostream", "string")),
        (
            "/* a\n   b */\n#include <vector>  // v\n# include<map>\n#include <vector>\nint x;",
            ("vector", "map"),
        ),
        ('#include <bits/stdc++.h>\n#include "mine.h"\n#include <map>\n', ("bits/stdc++.h",)),
        ("#define _GLIBCXX_DEBUG\n#include <vector>\n", ()),
        ('#pragma GCC optimize("O3")\n#include <vector>\n', ()),
        ("#include </etc/shadow>\n", ()),
        ("#include <../../etc/passwd>\n", ()),
        ("// line \\\n#include <vector>\n", ()),
        ("int main() {}\n#include <vector>\n", ()),
    ],
)
def test_only_a_leading_block_of_standard_includes_allows_a_header(
    code: str, headers: tuple[str, ...]
) -> None:
    assert leading_headers(code) == headers


def test_store_keeps_at_most_capacity_most_recent_first(tmp_path: Path) -> None:
    store = HeaderStore(capacity=2, root=tmp_path / "pch")
    assert store.usable()
    for name in ("a", "b"):
        store.add(name, b"#include <vector>\n", b"built " + name.encode())
        os.utime(store.root / name, (1, 1 if name == "a" else 2))
    assert store.find("a") is not None  # now the most recently used
    store.add("c", b"#include <map>\n", b"built c")
    assert store.find("b") is None and store.find("a") is not None and store.find("c") is not None
    entry = store.find("c")
    assert entry is not None and (entry / f"{PCH_HEADER}.gch").read_bytes() == b"built c"
    assert (entry / f"{PCH_HEADER}.gch").stat().st_mode & 0o777 == 0o444


def test_store_refuses_a_directory_others_may_write(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    assert HeaderStore(capacity=2, root=root).usable() is False
    assert HeaderStore(capacity=0, root=tmp_path / "off").usable() is False


async def test_built_in_the_background_then_used_for_the_same_binary(tmp_path: Path) -> None:
    settings = Settings()
    cpp = (await probe_registry(Registry.load())).resolve("cpp")
    options = cpp.options(None, None)
    slots = SlotPool(1, settings.sandbox_uid_base + UID_OFFSET)
    headers = PrecompiledHeaders(settings, slots, HeaderStore(4, tmp_path / "pch"))
    assert headers.for_source(cpp, options, "#define X\n" + HELLO) is None
    assert headers.building == 0, "no build for a source that cannot use it"

    assert headers.for_source(cpp, options, HELLO) is None, "the first compile does not wait"
    assert headers.building == 1
    await headers.wait_built()
    entry = headers.for_source(cpp, options, HELLO)
    assert entry is not None and (entry / f"{PCH_HEADER}.gch").stat().st_size > 1_000_000
    assert headers.for_source(cpp, cpp.options("c++20", None), HELLO) is None, "flags matter"

    async with slots.acquire() as slot:
        plain = await compile_source(cpp, HELLO, settings, slot, options)
        fast = await compile_source(cpp, HELLO, settings, slot, options, entry)
    assert plain.ok and fast.ok, fast.output
    assert fast.binary == plain.binary and fast.output == plain.output == ""
    assert plain.binary is not None and b".note.gnu.gold-version" in plain.binary, "gold linked it"
    # A header evicted between lookup and compile only costs the speed-up.
    async with slots.acquire() as slot:
        gone = await compile_source(cpp, HELLO, settings, slot, options, tmp_path / "evicted")
    assert gone.ok and gone.binary == plain.binary


async def test_a_header_of_exactly_the_sources_includes_keeps_its_meaning(
    tmp_path: Path,
) -> None:
    settings = Settings()
    cpp = (await probe_registry(Registry.load())).resolve("cpp")
    options = cpp.options(None, None)
    slots = SlotPool(1, settings.sandbox_uid_base + UID_OFFSET)
    headers = PrecompiledHeaders(settings, slots, HeaderStore(4, tmp_path / "pch"))
    headers.for_source(cpp, options, OWN_COUNT)
    await headers.wait_built()
    entry = headers.for_source(cpp, options, OWN_COUNT)
    assert entry is not None and (entry / PCH_HEADER).read_text() == "#include <cstdio>\n"
    async with slots.acquire() as slot:
        result = await compile_source(cpp, OWN_COUNT, settings, slot, options, entry)
    assert result.ok, result.output
