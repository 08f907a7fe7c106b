"""The language registry: which languages exist, how to compile and run them.

The registry is data: `languages.toml` beside this module, plus an optional operator
file (`--languages-file`) whose entries add to or replace the shipped ones. Probing
(`probe.py`, the only part that runs anything) keeps only the languages whose toolchain
really answers inside the sandbox, with its real version.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dcodex.shared.contract import LanguageInfo
from dcodex.shared.environment import SANDBOX_PATH, clean_env
from dcodex.shared.errors import BAD_REQUEST, DcodexError, unknown_language

# Toolchains are looked up on the sandbox's PATH, not the service's (which may be a venv);
# a language's `path` entries come first.
DEFAULT_REGISTRY_FILE = Path(__file__).with_name("languages.toml")
# The name a precompiled header is built from and used as (`{header}` in the commands).
PCH_HEADER = "dcodex-pch.hpp"

log = structlog.get_logger("dcodex.languages")


class LanguageEntry(BaseModel):
    """One table of a registry file, checked strictly so an operator's typo is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aliases: list[str] = Field(default_factory=list)
    extensions: list[str] = Field(default_factory=list)
    source: str
    compile: list[str] | None = None
    binary: str | None = None
    run: list[str]
    version: list[str]
    version_name: str
    path: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[str] = Field(default_factory=list)
    default_std: str | None = None
    std_flags: dict[str, list[str]] = Field(default_factory=dict)
    default_optimization: str | None = None
    optimization_flags: dict[str, list[str]] = Field(default_factory=dict)
    precompile: list[str] | None = None
    use_precompiled: list[str] | None = None
    address_space_headroom: int = Field(0, ge=0)


@dataclass(frozen=True)
class CompileOptions:
    """The per-request compile choices, after defaults (docs/protocol.md)."""

    std: str | None = None
    optimization: str | None = None


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
    path: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    # Host directories the toolchain needs beyond the sandbox's view (/usr, /lib...),
    # shown read-only inside it.
    mounts: tuple[str, ...] = ()
    default_std: str | None = None
    std_flags: tuple[tuple[str, tuple[str, ...]], ...] = ()
    default_optimization: str | None = None
    optimization_flags: tuple[tuple[str, tuple[str, ...]], ...] = ()
    precompile: tuple[str, ...] | None = None
    use_precompiled: tuple[str, ...] | None = None
    # Address space a run may reserve beyond its memory limit (the JVM reserves far more
    # than it uses); the limit then bounds resident memory through the cgroup.
    address_space_headroom: int = 0

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    @property
    def search_path(self) -> str:
        return ":".join([*self.path, SANDBOX_PATH])

    def sandbox_env(self, home: Path) -> dict[str, str]:
        """The environment of this language's compiles and runs: clean, plus its own."""
        return clean_env(home, self.path, dict(self.env))

    def options(self, std: str | None, optimization: str | None) -> CompileOptions:
        """The request's choices checked against this language's allowlists (else 400)."""
        return CompileOptions(
            std=_choose(self, "std", std, self.default_std, self.std_flags),
            optimization=_choose(
                self, "optimization", optimization, self.default_optimization,
                self.optimization_flags,
            ),
        )  # fmt: skip

    def compile_argv(self, options: CompileOptions, header: str | None = None) -> list[str]:
        """The compile command with the chosen flags (and the precompiled `header`)."""
        assert self.compile is not None
        argv = self._expand(self.compile, options)
        if header is not None and self.use_precompiled:
            argv[1:1] = self._expand(self.use_precompiled, options, header)
        return argv

    def precompile_argv(self, options: CompileOptions) -> list[str] | None:
        return self._expand(self.precompile, options) if self.precompile else None

    def run_argv(self, memory_bytes: int, args: Sequence[str] = ()) -> list[str]:
        """The run command, `{memory_mib}` replaced by the run's memory limit, then `args`."""
        memory_mib = str(max(1, memory_bytes // 2**20))
        return [part.replace("{memory_mib}", memory_mib) for part in self.run] + list(args)

    def address_space(self, memory_bytes: int) -> int | None:
        """The run's address-space limit when it is not the memory limit itself."""
        return memory_bytes + self.address_space_headroom if self.address_space_headroom else None

    def _expand(
        self, template: Sequence[str], options: CompileOptions, header: str = PCH_HEADER
    ) -> list[str]:
        flags = {
            "{std}": dict(self.std_flags).get(options.std or "", ()),
            "{optimization}": dict(self.optimization_flags).get(options.optimization or "", ()),
        }
        argv: list[str] = []
        for word in template:
            if word in flags:
                argv.extend(flags[word])
            else:
                argv.append(word.replace("{header}", header))
        return argv

    def info(self) -> LanguageInfo:
        """How `dcodex.languages` describes this language."""
        return LanguageInfo(
            id=self.id,
            aliases=list(self.aliases),
            version=self.version,
            compiled=self.compiled,
            extensions=list(self.extensions),
            std=[name for name, _ in self.std_flags],
            default_std=self.default_std,
            optimization=[name for name, _ in self.optimization_flags],
            default_optimization=self.default_optimization,
        )


def _choose(
    language: Language,
    field: str,
    asked: str | None,
    default: str | None,
    choices: tuple[tuple[str, tuple[str, ...]], ...],
) -> str | None:
    if asked is None:
        return default
    names = [name for name, _ in choices]
    if asked in names:
        return asked
    if not names:
        message = f"{language.id} has no {field} choice"
    else:
        message = f"{field} {asked!r} is not offered for {language.id}; one of {', '.join(names)}"
    raise DcodexError(BAD_REQUEST, message, field)


def _expand_home(value: str) -> str:
    """`~` is the service user's home: where rustup and similar install by default."""
    return os.path.expanduser(value) if value.startswith("~") else value


def _language_from_entry(language_id: str, entry: LanguageEntry) -> Language:
    def flags(table: Mapping[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple((name, tuple(words)) for name, words in table.items())

    for name, default, table in (
        ("default_std", entry.default_std, entry.std_flags),
        ("default_optimization", entry.default_optimization, entry.optimization_flags),
    ):
        if default is not None and default not in table:
            raise ValueError(f"{language_id}: {name} {default!r} is not one of its choices")
    if (entry.compile is None) != (entry.binary is None):
        raise ValueError(f"{language_id}: compile and binary go together")
    return Language(
        id=language_id.lower(),
        aliases=tuple(alias.lower() for alias in entry.aliases),
        extensions=tuple(ext.lower() for ext in entry.extensions),
        source=entry.source,
        run=tuple(entry.run),
        version_command=tuple(entry.version),
        version_name=entry.version_name,
        compile=tuple(entry.compile) if entry.compile else None,
        binary=entry.binary,
        path=tuple(_expand_home(p) for p in entry.path),
        env=tuple((key, _expand_home(value)) for key, value in entry.env.items()),
        mounts=tuple(_expand_home(m) for m in entry.mounts),
        default_std=entry.default_std,
        std_flags=flags(entry.std_flags),
        default_optimization=entry.default_optimization,
        optimization_flags=flags(entry.optimization_flags),
        precompile=tuple(entry.precompile) if entry.precompile else None,
        use_precompiled=tuple(entry.use_precompiled) if entry.use_precompiled else None,
        address_space_headroom=entry.address_space_headroom,
    )


def read_entries(path: Path) -> dict[str, LanguageEntry | None]:
    """The tables of one registry file (None: `disabled = true`); malformed is an error."""
    try:
        with path.open("rb") as file:
            tables: dict[str, Any] = tomllib.load(file)
        return {
            key.lower(): None
            if table.get("disabled") is True
            else LanguageEntry.model_validate(table)
            for key, table in tables.items()
        }
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"language registry {path}: {exc}") from exc


class Registry:
    """Languages by id and alias."""

    def __init__(self, languages: list[Language]) -> None:
        self.languages = languages
        self._by_name: dict[str, Language] = {}
        for language in languages:
            for name in language.names:
                taken = self._by_name.setdefault(name, language)
                if taken is not language:
                    raise ValueError(f"{name!r} names both {taken.id} and {language.id}")

    @classmethod
    def load(cls, extra: Path | None = None) -> Registry:
        """The shipped languages; entries of `extra` add to them or replace them by id."""
        entries = read_entries(DEFAULT_REGISTRY_FILE)
        if extra is not None:
            entries.update(read_entries(extra))
        return cls(
            [
                _language_from_entry(key, entry)
                for key, entry in entries.items()
                if entry is not None
            ]
        )

    def resolve(self, name: str) -> Language:
        """The language a request names, by id or alias, case-insensitive; else 404."""
        language = self._by_name.get(name.strip().lower())
        if language is None:
            raise unknown_language(name, self._by_name)
        return language

    def for_file(self, path: Path) -> Language | None:
        suffix = path.suffix.lower()
        return next((lang for lang in self.languages if suffix in lang.extensions), None)
