"""What a sandbox isolates: the layers of docs/sandbox.md as data, and their names.

`Isolation` says which layers a sandboxed run gets; `probe.detect_isolation`
finds the strongest one this host allows for an `--isolation` mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IsolationMode = Literal["strict", "best", "rlimits"]
ISOLATION_MODES: tuple[IsolationMode, ...] = ("strict", "best", "rlimits")

# The read-only view of the host a program gets with namespaces: the toolchains and
# the dynamic loader's files, nothing of /etc's secrets, /home, /root, /var or /tmp.
DEFAULT_VIEW: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
)

# Where the program's files are, and its working directory, inside the namespaces.
SANDBOX_WORKDIR = "/box"


@dataclass(frozen=True)
class Isolation:
    """The layers one sandboxed run gets (rlimits, no_new_privs and a clean
    environment always; the rest as the host allows)."""

    slot_uids: bool = False  # each slot runs as a uid/gid of its own (needs root)
    namespaces: bool = False  # pid, mount, network, IPC, UTS; tmpfs root; read-only view
    user_namespace: bool = False  # the namespaces are made without root
    cgroups: bool = False  # per-slot memory, pids and cpuacct cgroups
    disk_bytes: int = 64 * 2**20  # size of the writable tmpfs (/box and /tmp)
    read_only_paths: tuple[str, ...] = DEFAULT_VIEW

    @property
    def layers(self) -> list[str]:
        """The active layers by name, as reported to clients."""
        layers = ["rlimits", "no_new_privs", "clean_env"]
        if self.slot_uids:
            layers.append("uid")
        if self.namespaces:
            layers += NAMESPACE_LAYERS
            if self.user_namespace:
                layers.append("user_namespace")
        else:
            layers.append("process_group_kill")
        if self.cgroups:
            layers += ["cgroup_memory", "cgroup_pids", "cgroup_cpu"]
        return layers


# What the namespaces layer adds, by name.
NAMESPACE_LAYERS = [
    "network",
    "pid",
    "mount",
    "ipc",
    "uts",
    "tmpfs_workdir",
    "read_only_view",
    "tree_kill",
]

# What `strict` demands: every layer but the optional cgroups (docs/sandbox.md).
STRICT_LAYERS = ["rlimits", "no_new_privs", "clean_env", "uid", *NAMESPACE_LAYERS]

RLIMITS_ONLY = Isolation()


class IsolationUnavailable(RuntimeError):
    """The host cannot give the isolation the operator asked for."""
