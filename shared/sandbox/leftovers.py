"""What a service killed -9 leaves behind, found and removed when the next one starts.

Its programs end with it (the helper's parent-death signal), but its work directories
and its slots' cgroups stay. Both carry the pid of the service that made them
(`dcodex-run-<pid>-…`, `dcodex-runner-<pid>-<slot>`), so a starting service removes
those whose service is gone, and leaves alone those of services still running beside it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dcodex.shared.sandbox import cgroups_v2
from dcodex.shared.sandbox.cgroups import own_cgroup_dirs
from dcodex.shared.sandbox.proc_stat import stat_fields
from dcodex.shared.sandbox.workspace import staging_root

# `workspace()` and `slot_cgroup_name()` put the owner's pid here.
_WORKSPACE = re.compile(r"^dcodex-[a-z-]+?-(\d+)-")
_CGROUP = re.compile(r"^dcodex-[a-z]+-(\d+)-\d+$")


@dataclass(frozen=True)
class Leftovers:
    directories: list[Path]
    cgroups: list[Path]

    @property
    def count(self) -> int:
        return len(self.directories) + len(self.cgroups)


def find_leftovers(temp_dir: Path | None = None) -> Leftovers:
    """Work directories (in the temporary directory and the staging root) and cgroups
    of DCodeX services that no longer run."""
    temp = temp_dir or Path(tempfile.gettempdir())
    staging = staging_root()
    places = [temp, *([staging] if staging is not None and staging != temp else [])]
    directories = [
        path for place in places for path in _entries(place) if _orphan(_WORKSPACE, path.name)
    ]
    cgroups = [
        path
        for parent in _slot_cgroup_parents()
        for path in _entries(parent)
        if path.is_dir() and _orphan(_CGROUP, path.name)
    ]
    return Leftovers(directories, cgroups)


def _slot_cgroup_parents() -> list[Path]:
    """Where this host's slot cgroups are made: this process's own v2 cgroup (slots are
    siblings of the service's leaf; None unless the host is v2), else its own cgroup
    of each v1 controller."""
    if (own := cgroups_v2.own_cgroup()) is not None:
        return [own]
    return list((own_cgroup_dirs() or {}).values())


def remove_leftovers(temp_dir: Path | None = None) -> Leftovers:
    """Remove what `find_leftovers` finds (best effort); what was found."""
    found = find_leftovers(temp_dir)
    for directory in found.directories:
        shutil.rmtree(directory, ignore_errors=True)
    for cgroup in found.cgroups:
        with contextlib.suppress(OSError):
            cgroup.rmdir()  # refused while a process is still in it: left for next time
    return found


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []


def _orphan(pattern: re.Pattern[str], name: str) -> bool:
    match = pattern.match(name)
    return match is not None and not pid_alive(int(match.group(1)))


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return stat_fields(pid)[:1] != ["Z"]
    except OSError:
        return True
