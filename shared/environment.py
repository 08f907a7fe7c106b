"""The environment every sandboxed compile and run starts with: nothing of the host's.

One builder for the runner, the compiler, the language probes and the benchmarks; a
language's `path` and `env` (from the registry) are added to it, never the host's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


def clean_env(
    home: Path, path: Sequence[str] = (), extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A minimal environment: `path` before the system's bin directories, `extra` last."""
    return {
        "PATH": ":".join([*path, SANDBOX_PATH]),
        "HOME": str(home),
        "TMPDIR": str(home),  # not a /tmp that other runs share (without namespaces)
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        **(extra or {}),
    }
