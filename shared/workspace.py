"""Fresh working directories for sandboxed programs and compiles."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dcodex.shared.slots import Slot


@contextmanager
def workspace(slot: Slot, prefix: str) -> Iterator[Path]:
    """A private directory owned by the slot's uid, removed with all it holds at the end."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        _give_to(path, slot)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_file(directory: Path, name: str, data: bytes, slot: Slot, mode: int = 0o600) -> Path:
    path = directory / name
    path.write_bytes(data)
    path.chmod(mode)
    _give_to(path, slot)
    return path


def _give_to(path: Path, slot: Slot) -> None:
    if slot.uid is not None and slot.gid is not None:
        os.chown(path, slot.uid, slot.gid)
