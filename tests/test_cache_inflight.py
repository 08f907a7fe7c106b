"""Lease values of `dcodex-inflight` and the lease time, without a bus."""

from __future__ import annotations

import msgpack

from dcodex.services.cache.inflight import (
    Finished,
    decode,
    finished_value,
    holder,
    running_value,
)
from dcodex.services.cache.service import lease_seconds
from dcodex.shared.config import Settings
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.errors import TIMEOUT, DcodexError


def test_a_running_lease_names_its_holder() -> None:
    value = running_value(holder())
    assert decode(value) is True
    assert msgpack.unpackb(value)["holder"]["pid"] > 0


def test_a_finished_lease_carries_the_result_and_whether_it_was_kept() -> None:
    result = ExecutionResult(
        execution_id="leader", status="wall_time_limit", language="python", stdout="tick\n"
    )
    state = decode(finished_value(Finished(result, kept=False)))
    assert state == Finished(result, kept=False)


def test_a_finished_lease_carries_the_error() -> None:
    error = DcodexError(TIMEOUT, "no runner answered within 90 s")
    state = decode(finished_value(Finished(error=error)))
    assert isinstance(state, Finished) and state.result is None and state.error is not None
    assert (state.error.code, state.error.message) == (TIMEOUT, error.message)


def test_anything_else_holds_no_lease() -> None:
    for value in (b"", None, b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"state": "x"})):
        assert decode(value) is False
    assert decode(msgpack.packb({"state": "finished"})) is False


def test_the_lease_outlives_the_request_timeout_unless_set() -> None:
    assert lease_seconds(Settings(request_timeout_seconds=30)) == 40
    assert lease_seconds(Settings(request_timeout_seconds=30, cache_lease_seconds=5)) == 5
