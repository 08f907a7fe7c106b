"""The layout holds: what a client-only install loads, where commands and services come
from, and that the one table of subjects is what the services really serve."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.service.stack import installed_services, starter
from dcodex.shared.subjects import SERVICES, SUBJECTS
from tests.conftest import dcodex_argv

# What only the services need: a client must never pay for (or depend on) any of it.
SERVER_ONLY = ("nats.micro", "prometheus_client", "dcodex.shared.sandbox", "dcodex.shared.service")


def loaded_modules(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import dcodex.shared.client",
        "from dcodex.shared.cli.main import main",
        # What `dcodex bus run` does before it connects: map files to languages.
        "from dcodex.shared.cli.jobs import registry; registry()",
    ],
)
def test_the_client_and_the_cli_load_nothing_of_the_server(code: str) -> None:
    modules = loaded_modules(code)
    assert not [m for m in modules if m.startswith(SERVER_ONLY)], code


@pytest.mark.parametrize("service", ["cache", "runner", "compiler"])
def test_a_service_loads_no_ctypes_until_it_needs_it(service: str) -> None:
    """Idle memory (docs/performance.md): ctypes only for building the sandbox helper
    or reading a read-only cgroupfs, never on import."""
    modules = loaded_modules(
        f"from dcodex.shared.service.stack import starter; starter({service!r})\n"
        "import dcodex.shared.service.commands, dcodex.shared.sandbox.run"
    )
    assert "ctypes" not in modules


def test_without_the_server_extra_the_client_cli_works_and_server_commands_say_why() -> None:
    # As if `pip install dcodex` (no [server]): prometheus_client cannot be imported.
    blocked = "import sys; sys.modules['prometheus_client'] = None\n"
    run = "from dcodex.shared.cli.main import main; main()"
    for args, code, expected in (
        (["bus", "--help"], 0, "Talk to a running DCodeX"),
        (["up"], 1, "pip install 'dcodex[server]'"),
        (["--help"], 0, "service"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", blocked + run, *args], capture_output=True, text=True
        )
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert expected in done.stdout + done.stderr, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr


def test_the_cli_lists_the_server_commands_and_benchmarks_from_entry_points() -> None:
    top = subprocess.run(dcodex_argv("--help"), capture_output=True, text=True, check=True)
    for command in ("bus", "up", "service", "schemas", "bench"):
        assert f"\n  {command} " in top.stdout, top.stdout
    bench = subprocess.run(dcodex_argv("bench", "--help"), capture_output=True, text=True)
    for name in ("sandbox", "compile", "workloads"):
        assert name in bench.stdout, bench.stdout


def test_every_service_of_the_table_is_installed_and_nothing_else_is_guessed() -> None:
    installed = {point.name for point in entry_points(group="dcodex.services")}
    assert installed == {service.name for service in SERVICES}
    assert installed_services() == ("compiler", "runner", "cache"), "start order: table order"
    assert all(callable(starter(service.name)) for service in SERVICES)
    with pytest.raises(LookupError, match="no service 'nope' is installed"):
        starter("nope")


async def test_the_services_serve_exactly_the_subjects_of_the_table(
    client: DcodexClient,
) -> None:
    served = {
        (instance.name, endpoint.name, endpoint.subject)
        for instance in await client.services()
        for endpoint in instance.endpoints
        if instance.name.startswith("dcodex-")
    }
    table = {(s.service.micro_name, s.endpoint, s.on("dcodex")) for s in SUBJECTS}
    # and each subject that starts runs, once more per tenant (docs/tenancy.md)
    table |= {
        (s.service.micro_name, s.tenant_endpoint, s.on("dcodex") + ".*")
        for s in SUBJECTS
        if s.per_tenant
    }
    assert served == table


def test_every_package_of_the_tree_is_in_the_distribution() -> None:
    # A package missing from pyproject's list imports in a checkout (editable install)
    # but not from a built wheel, e.g. in the container image.
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(["dcodex", *init.parent.relative_to(root).parts])
        for top in ("shared", "services")
        for init in (root / top).rglob("__init__.py")
    }
    assert found == listed
