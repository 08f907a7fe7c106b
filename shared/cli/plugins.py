"""Commands found through entry points, imported only when they are run.

`dcodex.commands` adds top-level commands (the server half: `up`, `service`, ...);
`dcodex.benchmarks` adds `dcodex bench` subcommands. A package of an operator's may add
its own. A command whose module needs what a client-only install lacks says which
extra to install instead of failing with a traceback.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

COMMANDS = "dcodex.commands"
BENCHMARKS = "dcodex.benchmarks"


class EntryPointGroup(click.Group):
    """A click group that also lists the commands of an entry-point group."""

    def __init__(self, *args: Any, entry_points: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry_point_group = entry_points

    def _found(self) -> dict[str, EntryPoint]:
        return {point.name: point for point in entry_points(group=self.entry_point_group)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._found()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        point = self._found().get(cmd_name)
        if point is None:
            return None
        try:
            loaded = point.load()
        except ModuleNotFoundError as exc:
            return _needs_server(cmd_name, exc)
        if not isinstance(loaded, click.Command):
            raise TypeError(f"entry point {point.value} is not a click command")
        return loaded


def _needs_server(name: str, exc: ModuleNotFoundError) -> click.Command:
    @click.command(name, help=f"(needs: pip install 'dcodex[server]'; {exc.name} is missing)")
    def missing() -> None:
        raise click.ClickException(
            f"`dcodex {name}` needs the server extra: pip install 'dcodex[server]'"
            f" ({exc.name} is not installed)"
        )

    return missing
