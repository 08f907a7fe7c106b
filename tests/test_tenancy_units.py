"""The pure parts of the tenant model (docs/tenancy.md) and of the CLI's escaping."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dcodex.shared.bus.connect import ConnectOptions
from dcodex.shared.cli.terminal import visible
from dcodex.shared.contract import EffectiveLimits, PurgeRequest
from dcodex.shared.errors import DcodexError
from dcodex.shared.results import cache_key
from dcodex.shared.service.executions import owned_key
from dcodex.shared.service.live_runs import LiveRuns
from dcodex.shared.service.micro import reply_allowed
from dcodex.shared.subjects import (
    EXECUTE,
    RUN,
    execution_subjects,
    input_subject,
    output_subject,
)


def test_a_tenants_subjects_carry_its_name() -> None:
    assert EXECUTE.for_tenant("dcodex", "acme") == "dcodex.execute.acme"
    assert RUN.for_tenant("dcodex", None) == "dcodex.run"
    assert output_subject("dcodex", "id1", "acme") == "dcodex.output.acme.id1"
    assert input_subject("dcodex", "id1") == "dcodex.input.id1"


def test_a_tenant_asks_and_watches_on_its_own_subjects() -> None:
    assert execution_subjects("dcodex", "execute", "acme") == (
        "dcodex.execute.acme",
        "dcodex.status.execute.acme",
    )
    assert execution_subjects("dcodex", "run", "acme") == (
        "dcodex.run.acme",
        "dcodex.status.run.acme",
    )
    assert execution_subjects("dcodex", "run") == ("dcodex.run", "dcodex.status.run")


def test_a_tenants_executions_are_kept_apart() -> None:
    keys = {owned_key("id1", None), owned_key("id1", "acme"), owned_key("id1", "other")}
    assert len(keys) == 3
    assert owned_key("id1", None) == "id1"  # the plain subjects' ids as they always were


def test_a_tenant_gets_its_own_inbox_prefix() -> None:
    assert ConnectOptions(tenant="acme").nats_kwargs()["inbox_prefix"] == "_INBOX_acme"
    assert "inbox_prefix" not in ConnectOptions().nats_kwargs()
    assert ConnectOptions.from_env({"DCODEX_NATS_TENANT": "acme"}).tenant == "acme"
    for bad in ("a.b", "a*", ">", "", "a b"):
        with pytest.raises(DcodexError, match="subject token"):
            ConnectOptions(tenant=bad)


def test_replies_go_only_to_inboxes() -> None:
    assert reply_allowed("_INBOX.abc.1", "dcodex")
    assert reply_allowed("_INBOX_acme.abc.1", "dcodex")
    for reflected in (
        "$KV.dcodex-results.key",
        "$JS.API.STREAM.PURGE.KV_dcodex-results",
        "$O.dcodex-artifacts.M.x",
        "dcodex.output.acme.id",
        "dcodex.input.id",
        "",
    ):
        assert not reply_allowed(reflected, "dcodex"), reflected
    # A tenant's request is answered only in that tenant's inbox.
    assert reply_allowed("_INBOX_acme.abc.1", "dcodex", tenant="acme")
    assert reply_allowed("_INBOX.abc.1", "dcodex", tenant="acme")  # the cache asking
    for elsewhere in ("_INBOX_other.abc", "_INBOX_acmeX.abc", "$KV.x.y", "dcodex.output.x"):
        assert not reply_allowed(elsewhere, "dcodex", tenant="acme"), elsewhere


def test_a_live_id_is_held_once_per_tenant() -> None:
    runs = LiveRuns()
    with runs.claim("a", "id1"), runs.claim("b", "id1"), runs.claim(None, "id1"):
        with pytest.raises(DcodexError) as caught, runs.claim("a", "id1"):
            pass
        assert caught.value.code == 409
    assert len(runs) == 0
    with runs.claim("a", "id1"):  # free again once the run has ended
        assert len(runs) == 1


def test_tenants_share_no_cache_key() -> None:
    limits = EffectiveLimits(
        cpu_time_s=1,
        wall_time_s=2,
        memory_bytes=1 << 20,
        output_bytes=1024,
        processes=4,
        file_size_bytes=1024,
    )

    def key(tenant: str | None) -> str:
        return cache_key("python", "3", "print(1)", "", [], limits, tenant=tenant)

    assert len({key(None), key("a"), key("b")}) == 3
    assert key("a") == key("a")
    # A tenant's keys lie under its own subject token (what the NATS server can open to
    # it alone, docs/cache.md#direct-hits-the-client-reads-the-bucket); plain keys do not.
    for tenant in ("a", "b"):
        prefix, digest = key(tenant).split(".")
        assert prefix == tenant and len(digest) == 64 and digest != key(None)
    assert "." not in key(None) and len(key(None)) == 64
    # Each is a key that can be purged; what is neither is refused.
    for purgeable in (key(None), key("a")):
        assert PurgeRequest(key=purgeable).key == purgeable
    for refused in ("a." + key("a"), "a.b", key(None)[:-1], "*." + key(None), ">"):
        with pytest.raises(ValidationError):
            PurgeRequest(key=refused)


def test_control_characters_are_written_out() -> None:
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("\x1b]52;c;eA==\x07") == r"\x1b]52;c;eA==\x07"
    assert visible("x\ry\x7f\x9b\u202e\u2066") == r"x\ry\x7f\x9b\u202e\u2066"
    assert visible("héllo ✓ 日本") == "héllo ✓ 日本"
