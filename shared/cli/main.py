"""The `dcodex` command.

Every command comes from the `dcodex.commands` entry points and is imported only when
used: `dcodex bus ...` (the client side, which `pip install dcodex` alone runs) and the
server commands (`up`, `service`, `schemas`, `bench`, `chaos`), which need the server
extra. So a service process (`dcodex service NAME`) never imports the client CLI.
"""

from __future__ import annotations

import click

from dcodex.shared.cli.plugins import COMMANDS, EntryPointGroup
from dcodex.shared.version import version


@click.group(
    cls=EntryPointGroup,
    entry_points=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(version(), prog_name="dcodex")
def main() -> None:
    """DCodeX: run untrusted code under hard limits, over NATS."""


if __name__ == "__main__":
    main()
