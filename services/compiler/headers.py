"""Precompiled headers for one compiler instance: used when ready, built in the background.

A compile never waits for a header build: the first source that could use a header
starts its build and compiles without it; later ones find it ready.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from dcodex.services.compiler.compile import build_header
from dcodex.services.compiler.pch import HeaderStore, header_text, leading_headers, pch_digest
from dcodex.shared.languages.registry import CompileOptions, Language
from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.service.config import Settings

log = structlog.get_logger("dcodex.compiler.headers")


class PrecompiledHeaders:
    def __init__(
        self, settings: Settings, slots: SlotPool, store: HeaderStore | None = None
    ) -> None:
        self.settings = settings
        self.slots = slots
        self.store = store or HeaderStore(settings.precompiled_headers)
        self.enabled = self.store.usable()
        self._building: dict[str, asyncio.Task[Path | None]] = {}
        self._failed: set[str] = set()

    def for_source(self, language: Language, options: CompileOptions, code: str) -> Path | None:
        """A built header this source can use now, if any (a build starts when missing)."""
        if not self.enabled or language.precompile is None:
            return None
        headers = leading_headers(code)
        if not headers:
            return None
        digest = pch_digest(language, options, headers)
        found = self.store.find(digest)
        if found is None and digest not in self._building and digest not in self._failed:
            task = asyncio.create_task(self.build(language, options, headers, digest))
            self._building[digest] = task
            task.add_done_callback(lambda _: self._building.pop(digest, None))
        return found

    @property
    def building(self) -> int:
        return len(self._building)

    async def wait_built(self) -> None:
        """Until the builds under way now are done."""
        await asyncio.gather(*self._building.values())

    async def build(
        self, language: Language, options: CompileOptions, headers: tuple[str, ...], digest: str
    ) -> Path | None:
        """Build and keep one header (awaitable directly, e.g. by the benchmark)."""
        try:
            async with self.slots.acquire() as slot:
                built = await build_header(language, options, headers, self.settings, slot)
            if built is None:
                self._failed.add(digest)
                log.warning("pch_build_failed", language=language.id, headers=list(headers))
                return None
            entry = await asyncio.to_thread(
                self.store.add, digest, header_text(headers).encode(), built
            )
        except Exception:
            self._failed.add(digest)
            log.exception("pch_build_failed", language=language.id)
            return None
        log.info("pch_built", language=language.id, headers=list(headers), bytes=len(built))
        return entry
