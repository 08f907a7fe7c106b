"""`dcodex bus`: the command-line client of a running DCodeX.

The group's options say where DCodeX is and how to log in to its NATS server; the
commands live in run.py (run; the -i menu is menu.py) and admin.py (languages, ping,
stats, cache purge). Exit codes are in common.py.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import click

from dcodex.shared.bus.connect import DEFAULT_URL, ConnectOptions, default_url, env_var
from dcodex.shared.cli.admin import cache, languages, ping, stats
from dcodex.shared.cli.common import Target
from dcodex.shared.cli.jobs import unescape
from dcodex.shared.cli.judge import judge
from dcodex.shared.cli.run import run
from dcodex.shared.cli.show import check_expectations, summary
from dcodex.shared.client import DEFAULT_TIMEOUT_S
from dcodex.shared.logging import configure_logging
from dcodex.shared.subjects import DEFAULT_PREFIX, TENANT_PATTERN

__all__ = ["bus", "check_expectations", "summary", "unescape"]

PREFIX_ENV = "DCODEX_SUBJECT_PREFIX"  # the services' setting of the same name
TIMEOUT_ENV = "DCODEX_TIMEOUT_SECONDS"


def _file_option(name: str, help_text: str) -> click.Option:
    return click.Option(
        [f"--{name.replace('_', '-')}"],
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        envvar=env_var(name),
        help=f"{help_text} [env {env_var(name)}]",
    )


SERVER_HELP = (
    f"NATS URL of the DCodeX deployment [env {env_var('url')}; default: the `dcodex up` "
    f"running on this machine, else {DEFAULT_URL}]"
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--server", "-s", default=None, envvar=env_var("url"), help=SERVER_HELP)
@click.option("--user", envvar=env_var("user"), help=f"NATS user [env {env_var('user')}]")
@click.option(
    "--password", envvar=env_var("password"), help=f"NATS password [env {env_var('password')}]"
)
@click.option("--token", envvar=env_var("token"), help=f"NATS token [env {env_var('token')}]")
@click.option(
    "--tenant",
    envvar=env_var("tenant"),
    help=f"DCodeX tenant of this NATS login (docs/tenancy.md) [env {env_var('tenant')}]",
)
@click.option(
    "--subject-prefix",
    default=DEFAULT_PREFIX,
    envvar=PREFIX_ENV,
    show_default=True,
    help=f"prefix of the DCodeX subjects [env {PREFIX_ENV}]",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    envvar=TIMEOUT_ENV,
    show_default=True,
    help=f"seconds to wait for each reply [env {TIMEOUT_ENV}]",
)
@click.pass_context
def bus(
    ctx: click.Context,
    server: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    tenant: str | None,
    subject_prefix: str,
    timeout_s: float,
    nkey: str | None,
    creds: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Talk to a running DCodeX over NATS.

    The connection options may come after the subcommand as well
    (`dcodex bus run -f x.py --server URL`). Exit codes: 0 success; 1 a run's verdict
    was not `ok` (with --manifest: a run did not match it); 2 bad usage or input, an
    error reply, or DCodeX unreachable.
    """
    configure_logging("warning", "console")
    if tls_key and not tls_cert:
        raise click.BadParameter("needs --tls-cert as well", param_hint="--tls-key")
    check_tenant(tenant)
    options = ConnectOptions(
        url=server or default_url(),
        user=user,
        password=password,
        token=token,
        nkey=nkey,
        creds=creds,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tenant=tenant,
    )
    ctx.obj = Target(options, subject_prefix, timeout_s)


# The key and certificate files, added after the decorators so their help stays together.
for _name, _help in (
    ("nkey", "NKey seed file"),
    ("creds", "NATS credentials file (JWT and NKey seed)"),
    ("tls_ca", "CA certificates that signed the NATS server's certificate (PEM)"),
    ("tls_cert", "client certificate for NATS servers that verify clients (PEM)"),
    ("tls_key", "key of --tls-cert (PEM)"),
):
    bus.params.append(_file_option(_name, _help))

# Connection options may follow the subcommand too (`dcodex bus run -f x.py --server URL`),
# as the `nats` CLI allows; given there, they win over those before it.
CONNECTION_OPTIONS = {
    param.name: param
    for param in bus.params
    if isinstance(param, click.Option) and param.name is not None
}
TARGET_FIELDS = {"server": "url", "subject_prefix": "prefix", "timeout_s": "timeout_s"}


def check_tenant(tenant: str | None) -> None:
    if tenant is not None and not re.fullmatch(TENANT_PATTERN, tenant):
        raise click.BadParameter(
            "letters, digits, '_' and '-' only (a NATS subject token)", param_hint="--tenant"
        )


def accept_connection_options(command: click.Command) -> None:
    """Give `command` (and a group's commands) the group's connection options, hidden."""
    for name, option in CONNECTION_OPTIONS.items():
        command.params.append(
            click.Option(
                [*option.opts, *option.secondary_opts, name],
                type=option.type,
                default=None,
                hidden=True,
                help=option.help,
            )
        )
    original = command.callback

    def callback(*args: Any, **kwargs: Any) -> Any:
        given = {n: kwargs.pop(n) for n in CONNECTION_OPTIONS if kwargs.get(n) is not None}
        for name in CONNECTION_OPTIONS:
            kwargs.pop(name, None)
        if given:
            context = click.get_current_context()
            context.obj = retarget(context.find_object(Target), given)
        return original(*args, **kwargs) if original is not None else None

    command.callback = functools.update_wrapper(callback, original) if original else callback
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            accept_connection_options(subcommand)


def retarget(target: Target | None, given: dict[str, Any]) -> Target:
    """`target` with the connection options given after a subcommand laid over it."""
    if target is None:  # not under `bus`: nothing to lay them over
        raise click.UsageError("connection options belong to `dcodex bus`")
    check_tenant(given.get("tenant"))
    options = dataclasses.replace(
        target.options,
        **{
            ("url" if k == "server" else k): v
            for k, v in given.items()
            if k not in ("subject_prefix", "timeout_s")
        },
    )
    if options.tls_key and not options.tls_cert:
        raise click.BadParameter("needs --tls-cert as well", param_hint="--tls-key")
    return Target(
        options,
        given.get("subject_prefix", target.prefix),
        given.get("timeout_s", target.timeout_s),
    )


for _command in (run, judge, languages, ping, stats, cache):
    accept_connection_options(_command)
    bus.add_command(_command)
