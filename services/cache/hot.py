"""The results a replica served last, kept in its memory: a hit without a JetStream read.

A cache hit through the bucket costs a second round trip (the KV read) after the
request's own; from memory it costs none. The memory tier is a copy, never the
truth:

- an entry expires when its stored result does (stored at + the bucket's TTL);
- it is bounded in bytes (`--cache-memory-bytes`), least recently used first out;
- a purge (`dcodex.cache.purge`) reaches every replica's memory before it is
  answered, through `dcodex.cache.forget` (docs/cache.md, memory tier).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TLRUCache

from dcodex.shared.contract import ExecutionResult


@dataclass(frozen=True)
class HotResult:
    result: ExecutionResult  # as stored: no execution id, not yet marked a hit
    size: int  # its packed size, what the byte budget counts
    expires_at: float  # wall-clock time: stored at + the bucket's TTL


class HotResults:
    """An LRU of results by cache key, bounded in bytes, each gone when it expires."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self._entries: TLRUCache[str, HotResult] = TLRUCache(
            maxsize=max(max_bytes, 1),
            ttu=lambda _key, entry, _now: entry.expires_at,
            timer=clock,
            getsizeof=lambda entry: entry.size,
        )

    def get(self, key: str) -> ExecutionResult | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.result

    def put(self, key: str, result: ExecutionResult, size: int, expires_at: float) -> None:
        """Keep `result` until `expires_at` (unless it alone is over the budget)."""
        if 0 < size <= self.max_bytes:
            self._entries[key] = HotResult(result, size, expires_at)

    def forget(self, key: str | None) -> int:
        """Drop `key`, or everything; how many were dropped."""
        if key is None:
            dropped = len(self._entries)
            self._entries.clear()
            return dropped
        return 0 if self._entries.pop(key, None) is None else 1

    @property
    def size(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)
