"""The language registry: which languages exist, how to compile and run them.

The registry is data (`languages.toml` beside this module); `Registry.probe()` keeps
only the languages whose toolchain is really installed, with its real version.
"""

from __future__ import annotations

import asyncio
import shutil
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from dcodex.shared.errors import unknown_language

# Toolchains are looked up on the sandbox's PATH, not the service's (which may be a venv).
TOOLCHAIN_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_REGISTRY_FILE = Path(__file__).with_name("languages.toml")

log = structlog.get_logger("dcodex.languages")


@dataclass(frozen=True)
class Language:
    id: str
    aliases: tuple[str, ...]
    extensions: tuple[str, ...]
    source: str
    run: tuple[str, ...]
    version_command: tuple[str, ...]
    version_name: str
    compile: tuple[str, ...] | None = None
    binary: str | None = None
    version: str = ""

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


def _language_from_table(language_id: str, table: dict[str, Any]) -> Language:
    compile_argv = table.get("compile")
    return Language(
        id=language_id,
        aliases=tuple(alias.lower() for alias in table.get("aliases", [])),
        extensions=tuple(table.get("extensions", [])),
        source=table["source"],
        run=tuple(table["run"]),
        version_command=tuple(table["version"]),
        version_name=table["version_name"],
        compile=tuple(compile_argv) if compile_argv else None,
        binary=table.get("binary"),
    )


class Registry:
    """Languages by id and alias."""

    def __init__(self, languages: list[Language]) -> None:
        self.languages = languages
        self._by_name = {name: lang for lang in languages for name in lang.names}

    @classmethod
    def load(cls, path: Path | None = None) -> Registry:
        with (path or DEFAULT_REGISTRY_FILE).open("rb") as file:
            tables = tomllib.load(file)
        return cls([_language_from_table(key, table) for key, table in tables.items()])

    def resolve(self, name: str) -> Language:
        """The language a request names, by id or alias, case-insensitive; else 404."""
        language = self._by_name.get(name.strip().lower())
        if language is None:
            raise unknown_language(name, self._by_name)
        return language

    def for_file(self, path: Path) -> Language | None:
        suffix = path.suffix.lower()
        return next((lang for lang in self.languages if suffix in lang.extensions), None)

    async def probe(self) -> Registry:
        """A registry of the languages whose toolchain answers, each with its version."""
        found = await asyncio.gather(*(probe_version(lang) for lang in self.languages))
        available = []
        for language, version in zip(self.languages, found, strict=True):
            if version is None:
                log.warning("language_unavailable", language=language.id)
                continue
            available.append(replace(language, version=f"{language.version_name} {version}"))
        return Registry(available)


async def probe_version(language: Language) -> str | None:
    """First line of the toolchain's version command, or None when it is missing."""
    executable = shutil.which(language.version_command[0], path=TOOLCHAIN_PATH)
    if executable is None:
        return None
    process = await asyncio.create_subprocess_exec(
        executable,
        *language.version_command[1:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": TOOLCHAIN_PATH, "LANG": "C.UTF-8"},
    )
    output, _ = await process.communicate()
    lines = output.decode(errors="replace").strip().splitlines()
    if process.returncode != 0 or not lines:
        return None
    return lines[0].strip()
