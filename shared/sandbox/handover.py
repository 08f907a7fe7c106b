"""The handover of a deferred sandbox: the program's files and argv, sent on its stdin.

A sandbox started with `deferred=True` (`start_sandboxed`) is set up as a cold run's
(uid, cgroup, rlimits, namespaces, tmpfs root, read-only view, keyrings, no_new_privs,
seccomp) up to the program's `execv`; there the program process reads this from its
stdin (`take_handover` in sandbox_exec.c), never a byte further: the run's own stdin
follows it. It writes each file into /box (a new file, never through a link, the
mode given), then sets its address-space and file-size limits and execs the argv.

Layout: `LENGTH_DIGITS` decimal digits giving the description's length; the
description, NUL-separated fields each ending in a NUL: the number of files, then per
file its name, octal mode and size, then the argv; then the files' bytes in order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

LENGTH_DIGITS = 10
# What the helper accepts (HANDOVER_MAX_META, MAX_LIST and its field table in the C).
MAX_DESCRIPTION_BYTES = 2**20
MAX_FILES = 64
MAX_FIELDS = 4095


@dataclass(frozen=True)
class HandedFile:
    """A file written into the sandbox's /box before its program starts."""

    name: str
    data: bytes
    mode: int  # as a cold run's copy has it (0o500 for a binary, 0o400 for a source)


def plain_name(name: str) -> bool:
    """A name directly in /box: what the helper accepts (no "/", not "." nor "..")."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def deferred_handover(files: Sequence[HandedFile], argv: Sequence[str]) -> bytes | None:
    """The bytes that start a deferred sandbox's program; None when they cannot be sent
    (a NUL byte in an argument, too many or too long arguments): such runs go the cold
    way, which reports them as it always has. A name the helper would refuse raises."""
    for file in files:
        if not plain_name(file.name):
            raise ValueError(f"not a plain file name: {file.name!r}")
    if not argv or len(files) > MAX_FILES or any("\0" in arg for arg in argv):
        return None
    fields = [str(len(files)).encode()]
    for file in files:
        fields += [file.name.encode(), b"%o" % (file.mode & 0o7777), str(len(file.data)).encode()]
    fields += [os.fsencode(arg) for arg in argv]
    if len(fields) > MAX_FIELDS:
        return None
    description = b"".join(field + b"\0" for field in fields)
    if len(description) > MAX_DESCRIPTION_BYTES:
        return None
    return b"".join([b"%0*d" % (LENGTH_DIGITS, len(description)), description,
                     *(file.data for file in files)])  # fmt: skip
