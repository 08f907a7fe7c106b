"""The sandbox helper's two builds: static against musl (the default where musl-gcc is
installed: a tenth of glibc's start-up cost per run) and dynamic against glibc and
libseccomp (the fallback). Whether each enforces the filter: test_sandbox_hardening.py."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.shared.sandbox import helper
from dcodex.shared.sandbox.helper import (
    dynamic_helper,
    exported_filter,
    filter_header,
    helper_binary,
    helper_library,
    static_helper,
)

PT_INTERP = 3  # the program header naming an ELF's dynamic loader


def interpreter_headers(binary: str) -> int:
    """How many PT_INTERP program headers the (64-bit, little-endian) ELF has."""
    elf = Path(binary).read_bytes()
    assert elf[:4] == b"\x7fELF"
    (offset,) = struct.unpack_from("<Q", elf, 0x20)
    size, count = struct.unpack_from("<HH", elf, 0x36)
    types = [struct.unpack_from("<I", elf, offset + index * size)[0] for index in range(count)]
    return types.count(PT_INTERP)


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Builds of this test's own, whatever the machine's cache holds."""
    monkeypatch.setenv("DCODEX_CACHE_DIR", str(tmp_path))
    helper_binary.cache_clear()
    helper_library.cache_clear()
    yield tmp_path
    helper_binary.cache_clear()
    helper_library.cache_clear()


def test_the_helper_is_the_static_build_where_musl_is_installed(own_cache: Path) -> None:
    built = helper_binary()
    assert built == static_helper(), "musl-gcc is installed by scripts/system-deps.sh"
    assert interpreter_headers(built) == 0, "statically linked: no dynamic loader runs"
    assert interpreter_headers(dynamic_helper()) == 1


def test_the_static_helper_carries_the_filter_libseccomp_exports(own_cache: Path) -> None:
    bpf = exported_filter(helper_library())
    assert len(bpf) % 8 == 0 and len(bpf) > 100 * 8, "some 140 instructions"
    assert bpf in Path(static_helper()).read_bytes()


def test_without_musl_the_helper_is_the_dynamic_build(
    own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(helper, "_MUSL_GCC", "no-such-musl-gcc")
    assert helper_binary() == dynamic_helper()


def test_a_static_build_already_there_serves_without_musl(
    own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the container image: built at the image's build, run without build tools."""
    built = static_helper()
    monkeypatch.setattr(helper, "_MUSL_GCC", "no-such-musl-gcc")
    assert helper_binary() == built


def test_a_failed_static_build_falls_back_to_the_dynamic_one(
    own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(helper, "_MUSL_GCC", "false")  # found, and fails
    assert helper_binary() == dynamic_helper()
    assert not any(path.name.endswith("-static") for path in own_cache.iterdir())


def test_the_filter_header_spells_each_instruction() -> None:
    bpf = struct.pack("=HBBI", 0x20, 0, 0, 4) + struct.pack("=HBBI", 0x15, 1, 0, 0xC000003E)
    assert filter_header(bpf) == "#define DCODEX_SECCOMP_BPF {0x20,0,0,0x4},{0x15,1,0,0xc000003e}\n"
    with pytest.raises(ValueError, match="not a BPF program"):
        filter_header(bpf[:12])
