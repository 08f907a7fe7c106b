"""A small in-memory cache of recently used compiled programs, bounded in bytes.

Each program is kept with its compile's diagnostics (warnings), so a runner that finds
the program here answers exactly as the compiler would for a stored artifact.
"""

from __future__ import annotations

from collections import OrderedDict


class ArtifactCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0

    def get(self, digest: str) -> bytes | None:
        item = self._items.get(digest)
        if item is None:
            return None
        self._items.move_to_end(digest)
        return item[0]

    def warnings(self, digest: str) -> str:
        """The diagnostics of the compile of `digest` ("" when none, or not kept)."""
        item = self._items.get(digest)
        return item[1] if item is not None else ""

    def put(self, digest: str, data: bytes, warnings: str = "") -> None:
        if len(data) > self.max_bytes or digest in self._items:
            return
        self._items[digest] = (data, warnings)
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, (evicted, _) = self._items.popitem(last=False)
            self._bytes -= len(evicted)
