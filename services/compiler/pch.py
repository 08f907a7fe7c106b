"""Precompiled C++ headers: which a source may use, and where the built ones are kept.

A source may use one when it begins (after blank lines and comments) with a block of
`#include <standard header>` lines: the header is built from exactly those lines, in
that order, and force-included (`-include`) ahead of the source, whose own includes
then do nothing. The program sees the same declarations in the same order as without
it, so diagnostics and binary are the same; only the parsing is skipped.

Built headers live in one directory per service user under the temporary directory
(where workspaces are, so a compile gets them as hard links, not copies), one
subdirectory per digest of toolchain, flags and headers, at most `capacity` of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from dcodex.shared.languages.registry import PCH_HEADER, CompileOptions, Language

# The headers a precompiled header may be built from: the C++ standard library, the C
# library under both spellings, and GCC's everything-header. Nothing else ever reaches
# a header build, so a request cannot make the service precompile a path of its choice.
_CXX = """algorithm any array atomic barrier bit bitset cassert ccomplex cctype cerrno cfenv
cfloat charconv chrono cinttypes climits clocale cmath codecvt compare complex concepts
condition_variable coroutine csetjmp csignal cstdarg cstddef cstdint cstdio cstdlib cstring
ctime cuchar cwchar cwctype deque exception execution expected filesystem format
forward_list fstream functional future initializer_list iomanip ios iosfwd iostream istream
iterator latch limits list locale map memory memory_resource mutex new numbers numeric
optional ostream queue random ranges ratio regex scoped_allocator semaphore set shared_mutex
source_location span spanstream sstream stack stacktrace stdexcept stop_token streambuf
string string_view syncstream system_error thread tuple type_traits typeindex typeinfo
unordered_map unordered_set utility valarray variant vector version"""
_C = """assert ctype errno fenv float inttypes limits locale math setjmp signal stdarg stddef
stdint stdio stdlib string time uchar wchar wctype"""
STANDARD_HEADERS = frozenset(
    [*_CXX.split(), *(f"{name}.h" for name in _C.split()), "bits/stdc++.h"]
)

_INCLUDE = re.compile(r"\s*#\s*include\s*<([A-Za-z0-9_/+.]+)>\s*(//.*)?")


def leading_headers(code: str) -> tuple[str, ...]:
    """The standard headers the source includes before anything else, in order."""
    headers: list[str] = []
    in_comment = False
    for line in code.splitlines():
        if line.endswith("\\"):
            break  # a continued line: not worth reasoning about
        text = line.strip()
        if in_comment:
            end = text.find("*/")
            if end == -1:
                continue
            in_comment = False
            if text[end + 2 :].strip():
                break
            continue
        if not text or text.startswith("//"):
            continue
        if text.startswith("/*"):
            end = text.find("*/", 2)
            if end == -1:
                in_comment = True
            elif text[end + 2 :].strip():
                break
            continue
        match = _INCLUDE.fullmatch(line)
        if match is None or match[1] not in STANDARD_HEADERS:
            break
        if match[1] not in headers:
            headers.append(match[1])
    return tuple(headers)


def header_text(headers: tuple[str, ...]) -> str:
    return "".join(f"#include <{name}>\n" for name in headers)


def pch_digest(language: Language, options: CompileOptions, headers: tuple[str, ...]) -> str:
    canonical = json.dumps(
        [language.id, language.version, language.precompile_argv(options), list(headers)]
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class HeaderStore:
    """Built precompiled headers on disk, bounded by count, least recently used out."""

    def __init__(self, capacity: int, root: Path | None = None) -> None:
        self.capacity = capacity
        self.root = root or Path(tempfile.gettempdir()) / f"dcodex-pch-{os.geteuid()}"

    def usable(self) -> bool:
        """The store directory exists, is ours and no one else may write it."""
        if self.capacity == 0:
            return False
        try:
            self.root.mkdir(mode=0o755, exist_ok=True)
            info = os.lstat(self.root)
        except OSError:
            return False
        return (
            stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and info.st_mode & 0o022 == 0
        )

    def find(self, digest: str) -> Path | None:
        entry = self.root / digest
        if not (entry / f"{PCH_HEADER}.gch").is_file():
            return None
        os.utime(entry)  # recently used: evicted last
        return entry

    def add(self, digest: str, header: bytes, built: bytes) -> Path:
        """Keep a header and its build (the .gch); returns the directory holding both."""
        partial = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=self.root))
        partial.chmod(0o755)
        (partial / PCH_HEADER).write_bytes(header)
        (partial / f"{PCH_HEADER}.gch").write_bytes(built)
        for name in (PCH_HEADER, f"{PCH_HEADER}.gch"):
            (partial / name).chmod(0o444)
        entry = self.root / digest
        try:
            partial.rename(entry)
        except OSError:  # another compiler on this host kept the same one first
            shutil.rmtree(partial, ignore_errors=True)
        self._evict()
        return entry

    def _evict(self) -> None:
        entries = [p for p in self.root.iterdir() if not p.name.startswith(".")]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[self.capacity :]:
            shutil.rmtree(old, ignore_errors=True)


def link_into(entry: Path, directory: Path) -> bool:
    """Put a built header into a workspace (hard links, else copies); False if it cannot."""
    for name in (PCH_HEADER, f"{PCH_HEADER}.gch"):
        try:
            os.link(entry / name, directory / name, follow_symlinks=False)
        except OSError:
            try:
                shutil.copyfile(entry / name, directory / name, follow_symlinks=False)
            except OSError:  # evicted meanwhile, or no room in the workspace
                for partial in (PCH_HEADER, f"{PCH_HEADER}.gch"):
                    (directory / partial).unlink(missing_ok=True)
                return False
    return True
