"""`python -m dcodex.services.compiler.bench`: a fresh C++ hello world, with and without PCH.

Compiles through the same sandboxed core as the service (no bus, no artifact store, so
every compile is a real one) and prints the median and fastest wall times.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import click

from dcodex.services.compiler.compile import compile_source
from dcodex.services.compiler.headers import PrecompiledHeaders
from dcodex.services.compiler.pch import HeaderStore, leading_headers, pch_digest
from dcodex.services.compiler.service import UID_OFFSET
from dcodex.shared.languages.probe import available_languages
from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.service.config import Settings

HELLO = '#include <iostream>\n\nint main() {\n    std::cout << "Hello, world!\\n";\n}\n'


async def bench(runs: int, code: str) -> None:
    settings = Settings()
    slots = SlotPool(1, settings.sandbox_uid_base + UID_OFFSET)
    cpp = (await available_languages(settings.languages_file, slots.probe_slot())).resolve("cpp")
    options = cpp.options(None, None)
    headers = leading_headers(code)
    with tempfile.TemporaryDirectory(prefix="dcodex-pch-bench-") as root:
        store = HeaderStore(capacity=1, root=Path(root))
        started = time.perf_counter()
        entry = await PrecompiledHeaders(settings, slots, store).build(
            cpp, options, headers, pch_digest(cpp, options, headers)
        )
        build_s = time.perf_counter() - started
        if entry is None:
            raise click.ClickException("the precompiled header did not build")
        click.echo(f"{cpp.version}, {' '.join(cpp.compile_argv(options))}")
        click.echo(f"precompiled header <{'> <'.join(headers)}>: built once in {build_s:.2f} s")
        times: dict[str, list[float]] = {"without": [], "with": []}
        binaries: dict[str, bytes | None] = {}
        for _ in range(runs):
            for kind, precompiled in (("without", None), ("with", entry)):
                async with slots.acquire() as slot:
                    result = await compile_source(cpp, code, settings, slot, options, precompiled)
                if not result.ok:
                    raise click.ClickException(f"compile failed:\n{result.output}")
                times[kind].append(result.time_ms)
                binaries[kind] = result.binary
    for kind, values in times.items():
        click.echo(
            f"{kind:>7} PCH: median {statistics.median(values):7.1f} ms, "
            f"fastest {min(values):7.1f} ms over {runs} compiles"
        )
    same = binaries["with"] == binaries["without"]
    click.echo(f"same binary with and without: {'yes' if same else 'no'}")


@click.command()
@click.option("--runs", default=5, show_default=True, help="compiles of each kind")
@click.option("--file", "path", type=click.Path(exists=True, path_type=Path), help="C++ source")
def main(runs: int, path: Path | None) -> None:
    """Time a fresh C++ compile with and without the precompiled header."""
    asyncio.run(bench(runs, path.read_text() if path else HELLO))


if __name__ == "__main__":
    main()
