"""The runs under way in one service, by tenant and execution id.

An execution id names a run's live subjects, so two runs under way may not share one:
the second would publish its events where the first one's client listens and read the
input typed for the first program (docs/tenancy.md). Ids are unique per tenant: the
same id under two tenants names different subjects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dcodex.shared.errors import CONFLICT, DcodexError


class LiveRuns:
    def __init__(self) -> None:
        self._under_way: set[tuple[str | None, str]] = set()

    def __len__(self) -> int:
        return len(self._under_way)

    @contextmanager
    def claim(self, tenant: str | None, execution_id: str) -> Iterator[None]:
        """Hold `execution_id` for `tenant` while inside; refused with 409 if taken."""
        key = (tenant, execution_id)
        if key in self._under_way:
            raise DcodexError(
                CONFLICT,
                # Without the id: error messages show in `$SRV.STATS` (last_error).
                "this execution_id belongs to a run under way; leave it out to get a fresh one",
                "execution_id",
            )
        self._under_way.add(key)
        try:
            yield
        finally:
            self._under_way.discard(key)
