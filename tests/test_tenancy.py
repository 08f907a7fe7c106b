"""Two tenants on the shipped NATS config: one attacks, the other must not notice.

deploy/nats/values.yaml's users in a real nats-server, every service logged in as its
own role; the victim is the tenant of `dcodex-admin`, the attacker the tenant of
`dcodex-client` (docs/tenancy.md). The victim runs an interactive program and types a
secret; meanwhile the attacker tries what issue 14 found (reading every run's output,
typing into another's run, reusing its live id, reading every inbox) and the variations
around them: wildcards, JetStream and KV subjects, `$SRV`, forged events, queue-group
hijacks, replies reflected onto subjects only the services may publish. Each test
asserts that the attacker got nothing and that the victim's run ran untouched.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dcodex.shared.client import DcodexClient, ExecutionResult, LiveRun
from dcodex.shared.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, encode
from dcodex.shared.contract import OutputEvent, RunStatus, RunStatusRequest
from dcodex.shared.errors import DcodexError
from dcodex.shared.subjects import inbox_prefix
from tests.deploy_support import NatsServers, tenant_of
from tests.test_cli import bus, flat, shown
from tests.test_deploy_nats import secured_stack

pytestmark = pytest.mark.bus

SERVICES = ("compiler", "runner", "cache")
ATTACKER, VICTIM = "client", "admin"  # roles of deploy/nats/values.yaml
ECHO = "import sys\nfor line in sys.stdin:\n    print('got', line.strip(), flush=True)\n"
SENTINEL = "dcodex.tenancy.sentinel"  # a subject no tenant may publish to


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServers]:
    with secured_stack(tmp_path_factory, VICTIM) as servers:
        yield servers


@pytest.fixture
async def victim(secured: NatsServers) -> AsyncIterator[DcodexClient]:
    url, tenant = secured.url(VICTIM), tenant_of(VICTIM)
    async with await DcodexClient.connect(url, timeout=60, tenant=tenant) as client:
        yield client


@pytest.fixture
async def attacker_client(secured: NatsServers) -> AsyncIterator[DcodexClient]:
    url, tenant = secured.url(ATTACKER), tenant_of(ATTACKER)
    async with await DcodexClient.connect(url, timeout=60, tenant=tenant) as client:
        yield client


@dataclass
class Attacker:
    """A raw connection with the attacker's login: what it heard, what was refused."""

    nc: NATS
    heard: list[Msg] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _sentinel: asyncio.Event = field(default_factory=asyncio.Event)

    async def listen(self, subject: str, queue: str = "") -> None:
        async def record(msg: Msg) -> None:
            self.heard.append(msg)

        await self.nc.subscribe(subject, queue=queue, cb=record)

    async def refused(self, operation: str, subject: str, queue: str = "") -> bool:
        """Whether the server refuses to let the attacker `pub`/`sub` on `subject`;
        a subscription it allows stays, recording what arrives."""
        before = len(self.errors)
        self._sentinel.clear()
        if operation == "pub":
            await self.nc.publish(subject, b"{}")
        else:
            await self.listen(subject, queue)
        await self.nc.publish(SENTINEL, b"")  # refused too: its error comes after
        await asyncio.wait_for(self._sentinel.wait(), timeout=10)
        return any(f'"{subject.lower()}"' in e for e in self.errors[before:])

    def heard_text(self) -> str:
        return "\n".join(f"{m.subject} {m.reply} {m.data!r}" for m in self.heard)


@pytest.fixture
async def attacker(secured: NatsServers) -> AsyncIterator[Attacker]:
    holder: list[Attacker] = []

    async def on_error(exc: Exception) -> None:
        text = str(exc).lower()
        holder[0].errors.append(text)
        if f'"{SENTINEL}"' in text:
            holder[0]._sentinel.set()

    nc = await nats.connect(
        secured.url(ATTACKER),
        error_cb=on_error,
        allow_reconnect=False,
        inbox_prefix=inbox_prefix(tenant_of(ATTACKER)),
    )
    holder.append(Attacker(nc))
    # Everything the attacker may read at all: its own inbox and live subjects.
    await holder[0].listen(f"{inbox_prefix(tenant_of(ATTACKER))}.>")
    await holder[0].listen(f"dcodex.output.{tenant_of(ATTACKER)}.*")
    try:
        yield holder[0]
    finally:
        await nc.close()


Attack = Callable[[str], Awaitable[None]]


async def victim_run(
    victim: DcodexClient, attack: Attack, wall_s: float | None = None
) -> tuple[str, ExecutionResult]:
    """The victim's interactive run, attacked once it has started (the attack gets its
    execution id); then the victim types a secret. Asserts that the run saw exactly
    what the victim typed, and that its live events are its program's own. `wall_s`:
    its wall clock, for an attack that takes longer than the default's."""
    secret = f"secret-{uuid.uuid4().hex}"
    request: dict[str, Any] = {"language": "python", "code": ECHO}
    if wall_s is not None:
        request["limits"] = {"wall_time_s": wall_s}
    async with victim.interactive(request) as run:
        await run.send("first\n")  # waits for the program to start
        await attack(run.execution_id)
        await run.send(f"{secret}\n")
        await run.close_stdin()
        events = [event async for event in run.events()]
    result = run.result
    assert result is not None
    assert (result.status, result.stdout, result.stderr) == ("ok", f"got first\ngot {secret}\n", "")
    assert result.execution_id == run.execution_id
    live = "".join(e.data for e in events if isinstance(e, OutputEvent) and e.type == "stdout")
    assert live == result.stdout
    assert [e.type for e in events].count("result") == 1
    return secret, result


def assert_got_nothing(attacker: Attacker, *secrets: str) -> None:
    heard = attacker.heard_text()
    for secret in secrets:
        assert secret not in heard, heard


# Finding 1 and 4, and their variations: every subscription that could carry the
# victim's events, replies or input, wildcards included.
READS = [
    "dcodex.output.*",
    "dcodex.output.>",
    "dcodex.output.admin.*",
    "dcodex.output.admin.>",
    "dcodex.output.*.*",
    "dcodex.input.>",
    "dcodex.input.admin.*",
    "dcodex.>",
    ">",
    "*.>",
    "_INBOX.>",
    "_INBOX_admin.>",
    "$SRV.>",
    "$KV.>",
    "$KV.dcodex-results.>",
    "$O.>",
    "$JS.>",
    "$JS.API.>",
    # The status subjects: subscribing would show the victim's questions (its ids).
    "dcodex.status.>",
    "dcodex.status.execute.admin",
    "dcodex.status.run.admin",
    "dcodex.status.*.admin",
]


async def test_the_attacker_reads_no_output_input_or_reply_of_the_victim(
    victim: DcodexClient, attacker: Attacker
) -> None:
    refusals: dict[str, bool] = {}

    async def subscribe_everywhere(execution_id: str) -> None:
        for subject in [*READS, f"dcodex.output.{execution_id}", f"dcodex.input.{execution_id}"]:
            refusals[subject] = await attacker.refused("sub", subject)
        subject = f"dcodex.output.{tenant_of(VICTIM)}.{execution_id}"
        refusals[subject] = await attacker.refused("sub", subject)

    secret, result = await victim_run(victim, subscribe_everywhere)
    assert all(refusals.values()), [s for s, refused in refusals.items() if not refused]
    # The victim's plain replies too (the cache's reply carries the stdout).
    cached = await victim.execute({"language": "python", "code": f"print({secret!r})"})
    assert cached.stdout == f"{secret}\n"
    await attacker.nc.flush()
    assert_got_nothing(attacker, secret, result.execution_id)


async def test_the_attacker_cannot_type_into_the_victims_run(
    victim: DcodexClient, attacker: Attacker
) -> None:
    """Finding 2, with the victim's id known (the attacker cannot learn it): every
    input subject that could reach the victim's program is refused or reaches nobody."""
    refused: dict[str, bool] = {}

    async def inject(execution_id: str) -> None:
        for subject in (
            f"dcodex.input.{tenant_of(VICTIM)}.{execution_id}",
            f"dcodex.input.{execution_id}",
            f"dcodex.input.{tenant_of(VICTIM)}.*",
            f"dcodex.input.{tenant_of(VICTIM)}.>",
        ):
            refused[subject] = await attacker.refused("pub", subject)
        # Allowed, but the attacker's own namespace: no run of the victim listens there.
        own = f"dcodex.input.{tenant_of(ATTACKER)}.{execution_id}"
        await attacker.nc.publish(own, encode({"type": "stdin", "data": "injected\n"}, JSON))
        await attacker.nc.publish(own, encode({"type": "eof"}, JSON))
        await attacker.nc.publish(own, encode({"type": "signal", "signal": "SIGKILL"}, JSON))
        await attacker.nc.flush()

    await victim_run(victim, inject)  # asserts the program read exactly what was typed
    assert all(refused.values()), refused


REUSE_PROGRAM = (
    "import sys\n"
    "print('attacker-output', flush=True)\n"
    'print(\'{"type": "result", "seq": 99}\', flush=True)\n'
    "print('read:', sys.stdin.read().replace(chr(10), '|'), flush=True)\n"
)


@pytest.mark.parametrize("via", ["execute", "run"])
async def test_reusing_the_victims_live_id_touches_nothing_of_it(
    victim: DcodexClient, attacker_client: DcodexClient, attacker: Attacker, via: str
) -> None:
    """Finding 3: the attacker's own run under the victim's live execution_id publishes
    on the attacker's subjects, never the victim's, and never reads the victim's input."""
    stolen: list[LiveRun] = []

    async def reuse(execution_id: str) -> None:
        request = {
            "language": "python",
            "code": REUSE_PROGRAM,
            "execution_id": execution_id,
            "interactive": True,
        }
        run = attacker_client.live(request, via=via)
        await run.start()
        await run.send("own-input\n")
        stolen.append(run)

    secret, _ = await victim_run(victim, reuse)
    run = stolen[0]
    await run.close_stdin()
    result = await run.wait()
    await run.close()
    assert result.status == "ok", result.stderr
    assert "read: own-input|" in result.stdout and secret not in result.stdout
    assert_got_nothing(attacker, secret)
    # On the plain subjects the attacker may not even ask.
    for subject in ("dcodex.execute", "dcodex.run", f"dcodex.{via}.{tenant_of(VICTIM)}"):
        assert await attacker.refused("pub", subject), subject


async def test_a_live_id_is_refused_a_second_time(victim: DcodexClient) -> None:
    """Within a tenant, a second run under an id that a run under way has is refused."""
    errors: list[DcodexError] = []

    async def again(execution_id: str) -> None:
        for via in ("execute", "run"):
            with pytest.raises(DcodexError) as caught:
                request = {"language": "python", "code": "print(1)", "execution_id": execution_id}
                await getattr(victim, via)(request)
            errors.append(caught.value)

    await victim_run(victim, again)
    assert [e.code for e in errors] == [409, 409], errors


async def test_forged_events_and_hijacked_service_subjects_are_refused(
    victim: DcodexClient, attacker: Attacker
) -> None:
    refusals: dict[tuple[str, str], bool] = {}

    async def forge(execution_id: str) -> None:
        forged = encode({"type": "result", "seq": 1, "result": {"status": "ok"}}, JSON)
        for subject in (
            f"dcodex.output.{tenant_of(VICTIM)}.{execution_id}",
            f"dcodex.output.{execution_id}",
            f"dcodex.output.{tenant_of(ATTACKER)}.{execution_id}",
        ):
            refusals[("pub", subject)] = await attacker.refused("pub", subject)
            await attacker.nc.publish(subject, forged)
        # Queue-group hijacks: serving (a share of) a service's subjects.
        for subject in (
            "dcodex.execute",
            "dcodex.execute.*",
            f"dcodex.execute.{tenant_of(VICTIM)}",
            "dcodex.run.>",
            "dcodex.compile",
            "dcodex.languages",
            "dcodex.cache.purge",
            # Heard by every cache replica: a purge's word to their memory tiers.
            "dcodex.cache.forget",
            "dcodex.input.*.*",
            # Answering for the victim's runs: a forged "finished" would be its result.
            "dcodex.status.execute",
            "dcodex.status.execute.*",
            f"dcodex.status.execute.{tenant_of(VICTIM)}",
            f"dcodex.status.run.{tenant_of(VICTIM)}",
            f"dcodex.status.run.{tenant_of(ATTACKER)}",
            "$SRV.PING",
            "$SRV.INFO.dcodex-cache",
        ):
            for queue in ("", "q"):
                refusals[("sub", subject + queue)] = await attacker.refused("sub", subject, queue)

    secret, _ = await victim_run(victim, forge)
    assert all(refusals.values()), [k for k, refused in refusals.items() if not refused]
    assert_got_nothing(attacker, secret)


async def status_answer(
    nc: NATS, via: str, tenant: str, execution_id: str, named: str | None = None
) -> RunStatus | None:
    """What `dcodex.status.<via>.<tenant>` answers for `execution_id` (with `named` as the
    payload's tenant); None for silence. No responders at all is a failure: the test
    would prove nothing if no service heard the question."""
    body = RunStatusRequest(execution_id=execution_id, tenant=named).model_dump_json()
    try:
        msg = await nc.request(f"dcodex.status.{via}.{tenant}", body.encode(), timeout=2)
    except nats.errors.TimeoutError:
        return None
    return RunStatus.model_validate_json(msg.data)


async def test_a_tenant_is_told_of_its_own_executions_and_of_nobody_elses(
    victim: DcodexClient, attacker_client: DcodexClient, attacker: Attacker
) -> None:
    """The status subjects tell what became of an execution by its id, result and all
    (docs/reliability.md). The victim asks on its own and is told; the attacker may
    neither ask nor listen on the victim's, and on its own, with the victim's id (and
    naming the victim in the payload), hears nothing, during the run and after it."""
    told: dict[str, RunStatus | None] = {}
    refusals: dict[tuple[str, str], bool] = {}
    victim_tenant, own = tenant_of(VICTIM), tenant_of(ATTACKER)

    async def ask(key: str, nc: NATS, via: str, tenant: str, *args: Any) -> None:
        told[key] = await status_answer(nc, via, tenant, *args)

    async def ask_everywhere(execution_id: str) -> None:
        # At once: each silence takes the 2 s a question waits, within the run's wall clock.
        await asyncio.gather(
            *(
                question
                for via in ("execute", "run")
                for question in (
                    ask(f"victim {via}", victim.nc, via, victim_tenant, execution_id),
                    *(
                        ask(
                            f"attacker {via} naming {named}",
                            attacker.nc,
                            via,
                            own,
                            execution_id,
                            named,
                        )
                        for named in (None, victim_tenant)
                    ),
                )
            )
        )
        for subject in (
            f"dcodex.status.execute.{victim_tenant}",
            f"dcodex.status.run.{victim_tenant}",
            "dcodex.status.execute",
            "dcodex.status.run",
            "dcodex.status.compile",
        ):
            refusals[("pub", subject)] = await attacker.refused("pub", subject)
        for subject in (f"dcodex.status.execute.{victim_tenant}", "dcodex.status.>"):
            for queue in ("", "q"):
                refusals[("sub", subject + queue)] = await attacker.refused("sub", subject, queue)

    secret, result = await victim_run(victim, ask_everywhere, wall_s=15)
    assert all(refusals.values()), [k for k, refused in refusals.items() if not refused]
    # Under way: the victim hears "running" from the cache and from the runner.
    assert {k: s.state for k, s in told.items() if s is not None} == {
        "victim execute": "running",
        "victim run": "running",
    }, told
    # Finished (its result, with the secret, is kept for whoever asks again).
    told.clear()
    await ask_everywhere(result.execution_id)
    assert {k for k, s in told.items() if s is not None} == {"victim execute", "victim run"}, told
    for via in ("execute", "run"):
        mine = told[f"victim {via}"]
        assert mine is not None and mine.result is not None, via
        assert (mine.state, secret in mine.result.stdout) == ("finished", True)
    # The attacker's own execution is told on its own subject (the same question works).
    ran = await attacker_client.execute(
        {"language": "python", "code": "print('own')", "cache": False}
    )
    for via in ("execute", "run"):
        answer = await status_answer(attacker.nc, via, own, ran.execution_id)
        assert answer is not None and answer.result is not None, via
        assert (answer.state, answer.result.stdout) == ("finished", "own\n")
    await attacker.nc.flush()
    assert_got_nothing(attacker, secret)


async def test_no_jetstream_api_or_bucket_subject_for_a_tenant(
    victim: DcodexClient, attacker: Attacker
) -> None:
    """Cached results hold other tenants' stdout: no JetStream API, KV or Object
    Store subject is open to a tenant, and nothing comes back from trying."""
    secret = f"cached-{uuid.uuid4().hex}"
    stored = await victim.execute({"language": "python", "code": f"print({secret!r})"})
    key = stored.cache_key
    assert key is not None and key.startswith(f"{tenant_of(VICTIM)}.")
    digest = key.split(".", 1)[1]
    for subject in (
        "$JS.API.INFO",
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.INFO.KV_dcodex-results",
        "$JS.API.STREAM.MSG.GET.KV_dcodex-results",
        f"$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.{key}",
        # Not even a direct get of its own keys: nats-server would answer it on any
        # reply subject the tenant names (below).
        f"$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.{tenant_of(ATTACKER)}.{digest}",
        f"$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.{tenant_of(ATTACKER)}.*",
        f"$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.{digest}",
        f"$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.{tenant_of(VICTIM)}.*",
        "$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.>",
        "$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.*.*",
        "$JS.API.DIRECT.GET.KV_dcodex-results",
        "$JS.API.CONSUMER.CREATE.KV_dcodex-results",
        "$JS.API.STREAM.PURGE.KV_dcodex-results",
        "$JS.API.STREAM.DELETE.KV_dcodex-results",
        "$JS.API.STREAM.PURGE.OBJ_dcodex-artifacts",
        f"$KV.dcodex-results.{key}",
        "$O.dcodex-artifacts.M.x",
        "dcodex.cache.purge",
        # Emptying every replica's memory tier is the services' word alone.
        "dcodex.cache.forget",
    ):
        assert await attacker.refused("pub", subject), subject
    # And with a reply subject, as a real JetStream request would be.
    with pytest.raises(nats.errors.Error):
        await attacker.nc.request(
            f"$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.{key}", b"", timeout=2
        )
    # Reflection through JetStream itself: a direct get whose reply subject is the
    # victim's KV entry (its answer would be stored there) or a purge of the bucket (a
    # 404's empty answer would purge it). The publish is refused, so nothing is sent.
    own = f"$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.{tenant_of(ATTACKER)}."
    for target in (f"$KV.dcodex-results.{key}", "$JS.API.STREAM.PURGE.KV_dcodex-results"):
        for suffix in (digest, "missing"):
            await attacker.nc.publish(own + suffix, b"", reply=target)
    await attacker.nc.flush()
    assert sum("permissions violation" in e for e in attacker.errors) >= 4
    assert_got_nothing(attacker, secret)
    again = await victim.execute({"language": "python", "code": f"print({secret!r})"})
    assert (again.stdout, again.cache_hit) == (f"{secret}\n", True)


async def test_a_tenants_client_never_reads_the_bucket_itself(
    victim: DcodexClient, attacker_client: DcodexClient
) -> None:
    """Direct hits are for the plain subjects only (docs/cache.md#direct-hits): a
    tenant's client asks the cache for every hit, which the cache counts, and the same
    program run by the other tenant is that tenant's own run."""
    assert victim.direct_hits is None and attacker_client.direct_hits is None
    program = {
        "language": "python",
        "code": f"import uuid  # {uuid.uuid4().hex}\nprint(uuid.uuid4())",
    }
    mine = await victim.execute(program)
    before = await victim.cache_stats()
    for _ in range(3):
        again = await victim.execute(program)
        assert (again.cache_hit, again.stdout) == (True, mine.stdout)
    assert (await victim.cache_stats()).hits == before.hits + 3
    theirs = await attacker_client.execute(program)
    assert (theirs.cache_hit, theirs.stdout != mine.stdout) == (False, True)
    assert theirs.cache_key != mine.cache_key


async def reflect(attacker: Attacker, subject: str, reply: str, payload: dict[str, Any]) -> None:
    """A request whose reply subject is one only the services may publish on."""
    headers: dict[str, str] = {CONTENT_TYPE_HEADER: MSGPACK}
    await attacker.nc.publish(subject, encode(payload, MSGPACK), reply=reply, headers=headers)
    await attacker.nc.flush()


FORGED: dict[str, Any] = {"language": "python", "code": "print('FORGED')", "cache": False}
# Where each reflected reply would land: a cache entry of the victim's program
# (`{key}`), or a purge of a bucket (which only the admin may ask for, by dcodex.cache.purge).
REFLECTIONS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "forge": [
        ("dcodex.execute.client", "$KV.dcodex-results.{key}", FORGED),
        ("dcodex.run.client", "$KV.dcodex-results.{key}", FORGED),
        ("dcodex.languages", "$KV.dcodex-results.{key}", {}),
        ("$SRV.PING", "$KV.dcodex-results.{key}", {}),
        ("$SRV.INFO.dcodex-cache", "$KV.dcodex-results.{key}", {}),
    ],
    "purge": [
        ("dcodex.cache.stats", "$JS.API.STREAM.PURGE.KV_dcodex-results", {}),
        ("dcodex.languages", "$JS.API.STREAM.PURGE.KV_dcodex-results", {}),
        (
            "dcodex.compile",
            "$JS.API.STREAM.PURGE.OBJ_dcodex-artifacts",
            {"language": "c", "code": "int main(void){}"},
        ),
        ("$SRV.PING", "$JS.API.STREAM.PURGE.KV_dcodex-results", {}),
        ("$SRV.INFO", "$JS.API.STREAM.PURGE.OBJ_dcodex-artifacts", {}),
        ("$SRV.STATS", "$JS.API.STREAM.PURGE.KV_dcodex-results", {}),
    ],
}


@pytest.mark.parametrize("aim", sorted(REFLECTIONS))
async def test_replies_are_never_reflected_onto_service_subjects(
    secured: NatsServers,
    victim: DcodexClient,
    attacker_client: DcodexClient,
    attacker: Attacker,
    aim: str,
) -> None:
    """A requester picks its reply subject, and the services may publish where it may
    not: a reply sent to `$KV.dcodex-results.<key>` would be a forged cache entry of
    someone else's program (its key is computable), to `$JS.API.STREAM.PURGE...` a
    purge no tenant may ask for. The services answer none of these."""
    assert tenant_of(ATTACKER) == "client"  # the subjects above
    secret = f"real-{uuid.uuid4().hex}"
    program = {"language": "python", "code": f"print({secret!r})"}
    await victim.execute({"language": "c", "code": "int main(void){return 0;}"})  # an artifact
    first = await victim.execute(program)
    assert first.cache_key is not None
    artifacts, results = await stream_messages(secured)
    for subject, reply, payload in REFLECTIONS[aim]:
        await reflect(attacker, subject, reply.format(key=first.cache_key), payload)
    # Let anything those started finish: the same forged program, asked normally.
    assert (await attacker_client.run(FORGED)).stdout == "FORGED\n"
    await attacker_client.cache_stats()
    await asyncio.sleep(0.5)  # replies in flight reach JetStream
    again = await victim.execute(program)
    assert (again.stdout, again.cache_hit) == (f"{secret}\n", True)
    after = await stream_messages(secured)
    assert after[0] >= artifacts and after[1] >= results, ((artifacts, results), after)


async def test_replies_are_never_reflected_into_the_victims_run(
    victim: DcodexClient, attacker_client: DcodexClient, attacker: Attacker
) -> None:
    tenant = tenant_of(ATTACKER)

    async def reflect_into(execution_id: str) -> None:
        for where in ("output", "input"):
            reply = f"dcodex.{where}.{tenant_of(VICTIM)}.{execution_id}"
            program = {"language": "python", "code": "print('FORGED')", "cache": False}
            await reflect(attacker, f"dcodex.execute.{tenant}", reply, program)
            await reflect(attacker, "dcodex.languages", reply, {})
            await reflect(attacker, "$SRV.PING", reply, {})
        await attacker_client.run({"language": "python", "code": "print('FORGED')"})

    await victim_run(victim, reflect_into)  # its events and input are only its own


async def stream_messages(secured: NatsServers) -> tuple[int, int]:
    """Messages in the artifacts' and the results' streams (read as the setup role)."""
    nc = await nats.connect(secured.url("setup"))
    try:
        js = nc.jetstream()
        artifacts = (await js.stream_info("OBJ_dcodex-artifacts")).state.messages
        results = (await js.stream_info("KV_dcodex-results")).state.messages
        return artifacts, results
    finally:
        await nc.close()


async def test_tenants_share_no_cached_result(
    victim: DcodexClient, attacker_client: DcodexClient
) -> None:
    """A result may differ from run to run (time, randomness): the attacker sending
    the victim's exact program gets its own run, not the victim's output."""
    program = {"language": "python", "code": "import uuid\nprint(uuid.uuid4().hex)", "stdin": "x"}
    mine = await victim.execute(program)
    assert (await victim.execute(program)).stdout == mine.stdout  # cached for the victim
    theirs = await attacker_client.execute(program)
    assert (theirs.cache_hit, theirs.stdout == mine.stdout) == (False, False)
    assert theirs.cache_key != mine.cache_key
    assert (await victim.execute(program)).cache_hit


async def test_the_victim_is_still_served_after_every_attack(
    victim: DcodexClient, attacker_client: DcodexClient
) -> None:
    results = await asyncio.gather(
        victim.execute({"language": "c", "code": '#include <stdio.h>\nint main(void){puts("v");}'}),
        attacker_client.execute({"language": "python", "code": "print('a')"}),
    )
    assert [(r.status, r.stdout) for r in results] == [("ok", "v\n"), ("ok", "a\n")]


def test_the_cli_runs_as_a_tenant_and_says_when_the_tenant_is_missing(
    secured: NatsServers, tmp_path: Path
) -> None:
    program = tmp_path / "hello.py"
    program.write_text("print('tenant run')\n")
    url = secured.url(ATTACKER)
    tenant = ["--tenant", tenant_of(ATTACKER)]
    ran = bus(url, *tenant, "run", "--no-cache", "-f", str(program))
    assert ran.returncode == 0 and "tenant run" in ran.stdout, shown(ran)
    forgot = bus(url, "--timeout", "5", "run", "-f", str(program))
    assert forgot.returncode == 2, shown(forgot)
    assert "refused this login" in flat(forgot.stderr) and "--tenant" in forgot.stderr
    assert "Traceback" not in forgot.stderr


async def test_a_tenants_request_is_answered_only_in_its_own_inbox(
    secured: NatsServers, attacker_client: DcodexClient, attacker: Attacker
) -> None:
    """The attacker names a reply subject in the victim's inbox: the services run
    nothing for it and push nothing there."""
    planted = f"{inbox_prefix(tenant_of(VICTIM))}.planted"
    victim = await nats.connect(secured.url(VICTIM), inbox_prefix=inbox_prefix(tenant_of(VICTIM)))
    arrived: list[Msg] = []

    async def record(msg: Msg) -> None:
        arrived.append(msg)

    try:
        await victim.subscribe(f"{planted}.*", cb=record)
        await victim.flush()
        for via in ("execute", "run"):
            subject = f"dcodex.{via}.{tenant_of(ATTACKER)}"
            await reflect(attacker, subject, f"{planted}.{via}", FORGED)
        assert (await attacker_client.run(FORGED)).stdout == "FORGED\n"
        await asyncio.sleep(0.5)  # anything sent reaches the victim's connection
        await victim.flush()
        assert arrived == []
    finally:
        await victim.close()
