"""Fresh working directories for sandboxed programs and compiles.

Files are written while the directory still belongs to the service, and only then is
it handed to the slot's uid: root never writes into, nor follows a link in, a
directory that a sandboxed process could have prepared.

A run with namespaces only stages its files in the directory: the helper copies them
into the run's own size-capped tmpfs, which the program writes to. Such a directory
(`staged=True`) is made on the host's memory-backed tmpfs (`STAGING_ROOT`) when there
is one, where making, filling and removing it writes no filesystem journal; the rest
(a program's own directory without namespaces, a compile's copied-back outputs) stay
in the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from dcodex.shared.sandbox.slot import Slot

STAGING_ROOT = Path("/dev/shm")


@cache
def staging_root() -> Path | None:
    """`STAGING_ROOT` if it is a writable tmpfs here; None sends staged directories to
    the temporary directory too."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(mounts):  # the last mount on a point is the one seen
        _source, point, fs_type, options, *_ = [*line.split(), "", "", "", ""]
        if point == str(STAGING_ROOT):
            writable = "rw" in options.split(",") and os.access(STAGING_ROOT, os.W_OK)
            return STAGING_ROOT if fs_type == "tmpfs" and writable else None
    return None


def owned_directory(prefix: str, staged: bool = False) -> Path:
    """A new private (0700) directory whose name carries our pid: if we are killed
    before removing it, the next service to start removes it (leftovers.py). `staged`:
    a sandbox with namespaces copies what it holds into its own tmpfs (above)."""
    base = staging_root() if staged else None
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))


@contextmanager
def workspace(prefix: str, staged: bool = False) -> Iterator[Path]:
    """An `owned_directory`, removed with all it holds at the end."""
    path = owned_directory(prefix, staged)
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


def read_output_file(directory: Path, name: str, max_bytes: int) -> bytes | None:
    """A regular file the program left (not a link, not hard-linked to anything else,
    `max_bytes` at most; a sparse file counts its holes), or None."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > max_bytes:
            return None
        data = file.read(max_bytes + 1)
        return data if len(data) <= max_bytes else None


# The host's directories any uid may write to: without namespaces, what a run leaves
# there would be found by the next run of the same slot uid.
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")


def sweep_uid_files(uid: int, directories: tuple[str, ...] = SHARED_WRITABLE) -> int:
    """Remove what `uid` owns at the top of `directories` (its processes are gone);
    how many entries were removed."""
    removed = 0
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)  # never follows links
                else:
                    os.unlink(entry.path)
                removed += 1
            except OSError:
                continue
    return removed
