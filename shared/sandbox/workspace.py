"""Fresh working directories for sandboxed programs and compiles.

Files are written while the directory still belongs to the service, and only then is
it handed to the slot's uid: root never writes into, nor follows a link in, a
directory that a sandboxed process could have prepared.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dcodex.shared.sandbox.slot import Slot


@contextmanager
def workspace(prefix: str) -> Iterator[Path]:
    """A private (0700) directory, removed with all it holds at the end.

    Its name carries our pid: if we are killed before removing it, the next service
    to start removes it (leftovers.py).
    """
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_file(directory: Path, name: str, data: bytes, slot: Slot, mode: int = 0o600) -> None:
    """A new file (never through a link), owned by the slot's uid."""
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        if slot.uid is not None and slot.gid is not None:
            os.fchown(file.fileno(), slot.uid, slot.gid)


def write_read_only(directory: Path, name: str, data: bytes) -> None:
    """A new file the sandboxed program may read but not change: it stays the
    service's (root's), mode 0444. (The directory is the program's: it may still
    remove the file, which only harms its own fresh workspace.)"""
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        os.fchmod(file.fileno(), 0o444)  # whatever the umask


def hand_over(directory: Path, slot: Slot) -> None:
    """Give the directory to the slot's uid: from now on the program may write there."""
    if slot.uid is not None and slot.gid is not None:
        os.chown(directory, slot.uid, slot.gid)


def read_output_file(directory: Path, name: str) -> bytes | None:
    """A regular file the program left (not a link to something else), or None."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read()
