"""The `dcodex` command.

Every command comes from the `dcodex.commands` entry points and is imported only when
used: `dcodex bus ...` (the client side, which `pip install dcodex` alone runs) and the
server commands (`up`, `service`, `schemas`, `bench`, `chaos`), which need the server
extra. So a service process (`dcodex service NAME`) never imports the client CLI.
"""

from __future__ import annotations

import sys

import click

from dcodex.shared.cli.plugins import COMMANDS, EntryPointGroup
from dcodex.shared.version import version


class DcodexGroup(EntryPointGroup):
    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args[:1] == ["service"] and "rich" not in sys.modules:
            # A service process renders no tables: but structlog imports rich (and
            # pygments) whenever it is installed, for console tracebacks it can do
            # without. Kept out, they are 4.5 MB less of each service's memory.
            sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` fails
        return super().resolve_command(ctx, args)


@click.group(
    cls=DcodexGroup,
    entry_points=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(version(), prog_name="dcodex")
def main() -> None:
    """DCodeX: run untrusted code under hard limits, over NATS."""


if __name__ == "__main__":
    main()
