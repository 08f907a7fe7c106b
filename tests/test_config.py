"""Settings come from flags, then DCODEX_* variables, then defaults (docs/configuration.md)."""

from __future__ import annotations

from typing import Any

import click
from click.testing import CliRunner

from dcodex.shared.service.commands import settings_from, settings_options
from dcodex.shared.service.config import Settings


@click.command()
@settings_options
def show(**values: Any) -> None:
    click.echo(settings_from(values).model_dump_json())


def settings(args: list[str], env: dict[str, str]) -> Settings:
    result = CliRunner().invoke(show, args, env=env)
    assert result.exit_code == 0, result.output
    return Settings.model_validate_json(result.output)


def test_flag_beats_environment_beats_default() -> None:
    loaded = settings(
        ["--max-concurrent-sandboxes", "3", "--log-format", "console"],
        {"DCODEX_MAX_CONCURRENT_SANDBOXES": "5", "DCODEX_CACHE_TTL_SECONDS": "7"},
    )
    assert loaded.max_concurrent_sandboxes == 3
    assert loaded.cache_ttl_seconds == 7
    assert loaded.log_format == "console"
    assert loaded.sandbox_max_output_bytes == 10240
    assert loaded.nats_url == "nats://127.0.0.1:4222"


def test_every_setting_is_a_flag_and_a_variable() -> None:
    option_names = {name for param in show.params for name in param.opts}
    env_names = {param.envvar for param in show.params if isinstance(param, click.Option)}
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in option_names
        assert "DCODEX_" + name.upper() in env_names


def test_the_documented_defaults() -> None:
    loaded = settings([], {})
    assert loaded.max_concurrent_sandboxes == 10
    assert loaded.sandbox_cpu_time_limit_seconds == 1
    assert loaded.sandbox_wall_clock_timeout_seconds == 2
    assert loaded.sandbox_memory_limit_bytes == 4294967296
    assert loaded.sandbox_max_output_bytes == 10240
    assert loaded.cache_ttl_seconds == 3600


def test_a_bad_value_names_its_flag() -> None:
    result = CliRunner().invoke(show, [], env={"DCODEX_MAX_CONCURRENT_SANDBOXES": "0"})
    assert result.exit_code == 2
    assert "--max-concurrent-sandboxes" in result.output
