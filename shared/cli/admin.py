"""`dcodex bus languages | ping | stats | cache purge`: what is running and how it fares."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from dcodex.shared.bus.discovery import ServiceInstance
from dcodex.shared.cli.common import Target, console, fail, with_client
from dcodex.shared.cli.show import human_bytes
from dcodex.shared.client import DcodexClient

SERVICE_PREFIX = "dcodex-"
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON, not tables")
wait_option = click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="seconds to collect answers from every instance",
)


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, ensure_ascii=False))


@click.command()
@json_option
@click.pass_obj
def languages(target: Target, as_json: bool) -> None:
    """The languages the runners offer, and their limits."""

    async def show(client: DcodexClient) -> None:
        reply = await client.languages()
        if as_json:
            _echo_json(reply.model_dump(mode="json"))
            return
        table = Table("language", "aliases", "version", "compiled", "extensions")
        for lang in reply.languages:
            table.add_row(
                lang.id,
                ", ".join(lang.aliases),
                lang.version,
                "yes" if lang.compiled else "no",
                " ".join(lang.extensions),
            )
        console.print(table)
        limits = Table("limit", "default", "ceiling")
        for name, default in reply.limits.defaults.model_dump().items():
            ceiling = getattr(reply.limits.ceilings, name)
            limits.add_row(name, limit_text(name, default), limit_text(name, ceiling))
        console.print(limits)
        console.print(f"isolation: {', '.join(reply.isolation)}")

    with_client(target, show, needs="runner")


async def _instances(client: DcodexClient, target: Target, wait_s: float) -> list[ServiceInstance]:
    found = [i for i in await client.services(wait_s) if i.name.startswith(SERVICE_PREFIX)]
    if not found:
        fail(f"no DCodeX service is reachable at {target.url}: start one with `dcodex up`")
    return found


@click.command()
@json_option
@wait_option
@click.pass_obj
def ping(target: Target, as_json: bool, wait_s: float) -> None:
    """Every DCodeX service instance (NATS micro discovery): version and uptime."""

    async def show(client: DcodexClient) -> None:
        instances = await _instances(client, target, wait_s)
        if as_json:
            for instance in instances:
                _echo_json(_instance_json(instance))
            return
        table = Table("service", "id", "version", "uptime", "endpoints")
        table.columns[1].no_wrap = True
        for instance in instances:
            table.add_row(
                instance.name,
                instance.id,
                instance.version,
                _duration(instance.uptime_s()),
                " ".join(endpoint.subject for endpoint in instance.endpoints),
            )
        console.print(table)

    with_client(target, show, needs=None)


@click.command()
@json_option
@wait_option
@click.pass_obj
def stats(target: Target, as_json: bool, wait_s: float) -> None:
    """Requests, errors and average time per endpoint of every instance, and the cache."""

    async def show(client: DcodexClient) -> None:
        instances = await _instances(client, target, wait_s)
        cache = await client.cache_stats()
        if as_json:
            for instance in instances:
                _echo_json(_instance_json(instance))
            _echo_json({"cache": cache.model_dump(mode="json")})
            return
        # Instances are named by the start of their id, as `dcodex bus ping` shows it in full.
        # DCodeX services time each request from its arrival to the reply sent; other
        # micro services' figures are whatever their library measures.
        table = Table("service", "instance", "endpoint", "requests", "errors", "avg time")
        table.columns[2].overflow = "fold"  # a long subject prefix wraps, never "…"
        for column in table.columns[3:]:
            column.justify = "right"
        for instance in instances:
            for index, endpoint in enumerate(instance.endpoints):
                table.add_row(
                    instance.name if index == 0 else "",
                    instance.id[:8] if index == 0 else "",
                    endpoint.subject or endpoint.name,
                    str(endpoint.num_requests),
                    str(endpoint.num_errors),
                    _milliseconds(endpoint.average_processing_time_ms, endpoint.num_requests),
                )
            table.add_section()
        console.print(table)
        lookups = cache.hits + cache.misses
        ratio = f"{cache.hits / lookups:.0%}" if lookups else "n/a"
        summary = Table("cache", "value")
        for name, value in (
            ("entries", str(cache.entries)),
            ("bytes", str(cache.bytes)),
            ("hits", str(cache.hits)),
            ("misses", str(cache.misses)),
            ("coalesced", str(cache.coalesced)),
            ("hit ratio", ratio),
        ):
            summary.add_row(name, value)
        console.print(summary)

    with_client(target, show, needs=None)


@click.group()
def cache() -> None:
    """The result cache."""


@cache.command()
@click.option("--key", default=None, help="purge only the result under this cache key")
@click.pass_obj
def purge(target: Target, key: str | None) -> None:
    """Drop every cached result, or the one under --key."""

    async def act(client: DcodexClient) -> None:
        reply = await client.purge(key)
        what = f"under key {escape(key)}" if key else "in the cache"
        console.print(f"purged {reply.purged} cached result{'s' * (reply.purged != 1)} {what}")

    with_client(target, act)


def _instance_json(instance: ServiceInstance) -> dict[str, Any]:
    return {**instance.model_dump(mode="json"), "uptime_s": instance.uptime_s()}


def _milliseconds(value: float, requests: int) -> str:
    """An average time; none before the first request."""
    if requests == 0:
        return "-"
    return f"{value:.1f} ms" if value >= 1 else f"{value:.3f} ms"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def limit_text(name: str, value: float) -> str:
    """A limit as a person reads it: `4 GiB`, `16 MiB`, `1 s`, `64`."""
    if name.endswith("_bytes"):
        return human_bytes(value)
    if name.endswith("_s"):
        return f"{value:g} s"
    return f"{value:g}"
