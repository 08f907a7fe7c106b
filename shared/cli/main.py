"""The `dcodex` command.

`dcodex bus ...` (the client side) is built in; the server commands (`up`, `service`,
`schemas`, `bench`) come from the `dcodex.commands` entry points and are imported only
when used, so `pip install dcodex` alone gives a working client CLI.
"""

from __future__ import annotations

import click

from dcodex.shared.cli.bus import bus
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


main.add_command(bus)


if __name__ == "__main__":
    main()
