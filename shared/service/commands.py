"""The server half of the `dcodex` command: `up`, `service`, `schemas` and `bench`.

The CLI finds these through the `dcodex.commands` entry points, so a client-only
install never imports them. Every field of `Settings` is a flag of `up` and `service`
and a `DCODEX_*` variable.
"""

from __future__ import annotations

import asyncio
import sys
import types
import typing
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from dcodex.shared.bus.connect import DEFAULT_PORT, DEFAULT_URL, up_state_file
from dcodex.shared.cli.plugins import BENCHMARKS, EntryPointGroup
from dcodex.shared.errors import DcodexError
from dcodex.shared.logging import configure_logging
from dcodex.shared.sandbox.isolation import IsolationUnavailable
from dcodex.shared.service.config import Settings, env_var, flag
from dcodex.shared.service.lifecycle import Service
from dcodex.shared.service.metrics import metrics_port, stack_metrics_ports
from dcodex.shared.service.stack import installed_services, serve
from dcodex.shared.service.stack import up as run_up

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _click_type(field: FieldInfo) -> Any:
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(choice) for choice in typing.get_args(annotation)])
    return annotation


def settings_options(command: F) -> F:
    """Add one option per `Settings` field, with its `DCODEX_*` variable."""
    for name, field in reversed(Settings.model_fields.items()):
        default = field.default
        # A yes/no setting is a pair of flags: --python-zygote/--no-python-zygote.
        switch = field.annotation is bool
        command = click.option(
            f"{flag(name)}/--no-{flag(name)[2:]}" if switch else flag(name),
            name,
            type=None if switch else _click_type(field),
            default=default,
            envvar=env_var(name),
            show_default=default is not None,
            help=f"{field.description} [env {env_var(name)}]",
        )(command)
    return command


def settings_from(values: dict[str, Any]) -> Settings:
    try:
        return Settings(**{name: values[name] for name in Settings.model_fields if name in values})
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = str(problem["loc"][0])
        raise click.BadParameter(problem["msg"], param_hint=flag(name)) from exc


@click.command(context_settings={"ignore_unknown_options": False})
@settings_options
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="JetStream store of the embedded nats-server (default: a temp dir)",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def up(data_dir: Path | None, command: tuple[str, ...], **values: Any) -> None:
    """The whole system on this machine: an embedded nats-server and all three services.

    With a COMMAND (after `--`), run it once the stack is ready, with DCODEX_NATS_URL set,
    stop the stack when it ends and exit with its exit code:
    `dcodex up -- dcodex bus run -d examples`.
    """

    context = click.get_current_context()
    defaulted = {
        name
        for name in ("nats_url", "log_level", "log_format", "isolation")
        if context.get_parameter_source(name) in (None, ParameterSource.DEFAULT)
    }
    # A local stack talks to a person: quieter, readable logs unless asked otherwise,
    # and the strongest sandbox this machine offers rather than a refusal to start.
    local = {"log_level": "warning", "log_format": "console", "isolation": "best"}
    settings = settings_from({**values, **{k: v for k, v in local.items() if k in defaulted}})
    configure_logging(settings.log_level, settings.log_format)
    embedded = "nats_url" in defaulted
    ports = stack_metrics_ports(settings.metrics_port)
    code = _run(
        run_up(
            settings,
            embedded=embedded,
            data_dir=data_dir,
            metrics_ports=ports,
            command=command,
            on_ready=lambda s, services: _print_ready(s, services, ports, bool(command), embedded),
        )
    )
    sys.exit(code)


def _print_ready(
    settings: Settings,
    services: list[Service],
    ports: dict[str, int],
    has_command: bool,
    embedded: bool,
) -> None:
    lines = [f"DCodeX is up: NATS at {settings.nats_url}"]
    if embedded and settings.nats_url != DEFAULT_URL:
        lines.append(
            f"  (port {DEFAULT_PORT} is taken: clients on this machine find this one through "
            f"{up_state_file()}; elsewhere use --server {settings.nats_url})"
        )
    for service in services:
        short = service.name.removeprefix("dcodex-")
        port = ports.get(short, 0)
        served = f":{port}/metrics /healthz /readyz" if port else "off"
        lines.append(f"  {service.name:<16} metrics {served}")
        lines += [f"  {'':<16} {key}: {value}" for key, value in service.details.items()]
    if not has_command:
        lines.append("Stop with Ctrl-C.")
    click.echo("\n".join(lines), err=True)


@click.command()
@click.argument("name", type=click.Choice(installed_services()))
@settings_options
def service(name: str, **values: Any) -> None:
    """Run one service (the container entrypoint) until SIGINT or SIGTERM."""

    settings = settings_from(values)
    configure_logging(settings.log_level, settings.log_format)
    _run(serve(settings, [name], {name: metrics_port(name, settings.metrics_port)}))


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a stack; a failure to reach NATS is one clear line, not a traceback."""
    try:
        return asyncio.run(work)
    except DcodexError as exc:
        raise click.ClickException(exc.message) from exc
    except IsolationUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(cls=EntryPointGroup, entry_points=BENCHMARKS)
def bench() -> None:
    """Measure DCodeX (figures are printed, never asserted)."""
