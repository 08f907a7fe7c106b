"""Every example program, through `dcodex.execute`, gets the verdict and output its
manifest entry names (under the default limits)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dcodex.shared.cli.bus import check_expectations
from dcodex.shared.client import DcodexClient
from dcodex.shared.languages.registry import Registry

pytestmark = pytest.mark.bus


EXAMPLES = Path(__file__).parent.parent / "examples"
MANIFEST = tomllib.loads((EXAMPLES / "manifest.toml").read_text())


def test_manifest_covers_every_example() -> None:
    registry = Registry.load()
    on_disk = {
        str(path.relative_to(EXAMPLES))
        for path in EXAMPLES.rglob("*")
        if path.is_file()
        and registry.for_file(path)
        and path.relative_to(EXAMPLES).parts[0] != "judge"  # judged: tests/test_cli_judge.py
    }
    assert on_disk == set(MANIFEST)
    assert len(on_disk) == 32


@pytest.mark.parametrize("name", sorted(MANIFEST))
async def test_example(client: DcodexClient, name: str) -> None:
    expect = MANIFEST[name]
    path = EXAMPLES / name
    language = Registry.load().for_file(path)
    assert language is not None
    result = await client.execute(
        {
            "language": language.id,
            "code": path.read_text(),
            "stdin": expect.get("stdin", ""),
            "cache": False,
        }
    )
    assert check_expectations(result, expect) == [], result
