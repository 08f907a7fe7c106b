#!/usr/bin/env python3
"""Writes deploy/seccomp/dcodex-sandbox.json: the container runtime's default seccomp
profile plus exactly what the sandbox helper (shared/sandbox/sandbox_exec.c) needs.

    scripts/seccomp-profile.py [DEFAULT_PROFILE] > deploy/seccomp/dcodex-sandbox.json

DEFAULT_PROFILE is Docker's (moby's) profiles/seccomp/default.json, which containerd's
RuntimeDefault follows; Debian ships it in golang-github-docker-docker-dev, the default
path below (scripts/container-deps.sh installs it). The default allows mount, unshare,
setns, bpf, perf_event_open and more to any container that has CAP_SYS_ADMIN. The
runner and compiler need CAP_SYS_ADMIN for the sandbox but only a few of those calls,
so the profile is the default as it stands for a container WITHOUT CAP_SYS_ADMIN, plus:

  clone (any flags)  the helper makes the run's pid, mount, network, IPC and UTS
                     namespaces with clone(2); clone3 stays ENOSYS (its flags can't be
                     filtered), so libc falls back to clone
  unshare            the same namespaces for a process already running (`--userns` mode)
  mount, umount2     the tmpfs root, /proc, the read-only view; the runner's writable
                     cgroup file system in a container (shared/sandbox/cgroup_mounts.py)
  pivot_root         into the run's tmpfs root
  sethostname        the run's own UTS name

io_uring is left out (newer runtimes' defaults drop it too). Everything is flattened
(no capability conditions), so a runtime applies it the same whatever it supports.
"""

from __future__ import annotations

import json
import sys
from typing import Any

DEFAULT = "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"
SANDBOX_SYSCALLS = ["clone", "mount", "pivot_root", "sethostname", "umount2", "unshare"]
LEFT_OUT = {"io_uring_enter", "io_uring_register", "io_uring_setup"}
# The runner's and compiler's capabilities (deploy/k8s/base), but CAP_SYS_ADMIN.
CAPABILITIES = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"}


def applies_without_sys_admin(rule: dict[str, Any]) -> bool:
    """Whether the runtime would apply `rule` to a pod with its capabilities but
    CAP_SYS_ADMIN."""
    included = set(rule.get("includes", {}).get("caps", []))
    excluded = set(rule.get("excludes", {}).get("caps", []))
    return included <= CAPABILITIES and not excluded & CAPABILITIES


def flatten(rule: dict[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in rule.items() if key not in ("includes", "excludes")}
    for key in ("includes", "excludes"):
        conditions = {k: v for k, v in rule.get(key, {}).items() if k != "caps"}
        if conditions:
            flat[key] = conditions
    flat["names"] = [name for name in rule["names"] if name not in LEFT_OUT]
    return flat


def profile(default: dict[str, Any]) -> dict[str, Any]:
    rules = []
    for rule in default["syscalls"]:
        if not applies_without_sys_admin(rule):
            continue
        if rule["names"] == ["clone"]:
            continue  # clone without namespace flags: the rule below allows it whole
        flat = flatten(rule)
        if flat["names"]:
            rules.append(flat)
    rules.append(
        {
            "names": SANDBOX_SYSCALLS,
            "action": "SCMP_ACT_ALLOW",
            "args": [],
            "comment": "DCodeX sandbox: namespaces, its mounts and pivot_root "
            "(scripts/seccomp-profile.py says why)",
        }
    )
    return {
        "defaultAction": default["defaultAction"],
        "archMap": default["archMap"],
        "syscalls": rules,
    }


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    with open(path) as source:
        default = json.load(source)
    json.dump(profile(default), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
