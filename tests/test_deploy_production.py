"""What the manifests ask of a cluster for the sandboxed pods: no `Unconfined`, the
shipped seccomp profile (the runtime's default plus the sandbox's calls, and nothing
more of what CAP_SYS_ADMIN would unlock), the AppArmor profile, user namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_support import DEPLOY, ROOT, kustomize

PROFILE = DEPLOY / "seccomp" / "dcodex-sandbox.json"
RUNTIME_DEFAULT = Path(
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"
)


def pod(service: str) -> dict[str, Any]:
    for doc in kustomize(DEPLOY / "k8s" / "overlays" / "example"):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == f"dcodex-{service}":
            spec: dict[str, Any] = doc["spec"]["template"]["spec"]
            return spec
    raise LookupError(service)


def allowed(profile: dict[str, Any]) -> set[str]:
    """The calls a profile allows on x86-64 without conditions on their arguments."""
    names: set[str] = set()
    for rule in profile["syscalls"]:
        arches = rule.get("includes", {}).get("arches")
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args") and not arches:
            names.update(rule["names"])
    return names


def test_no_manifest_asks_for_unconfined() -> None:
    rendered = json.dumps(kustomize(DEPLOY / "k8s" / "overlays" / "example"))
    assert "Unconfined" not in rendered


@pytest.mark.parametrize("service", ["runner", "compiler"])
def test_sandboxed_pods_are_user_namespaced_with_the_shipped_profiles(service: str) -> None:
    spec = pod(service)
    assert spec["hostUsers"] is False
    context = spec["securityContext"]
    assert context["seccompProfile"]["type"] == "Localhost"
    assert Path(context["seccompProfile"]["localhostProfile"]).name == PROFILE.name
    assert context["appArmorProfile"] == {"type": "Localhost", "localhostProfile": "dcodex-sandbox"}
    apparmor = (DEPLOY / "apparmor" / "dcodex-sandbox").read_text()
    assert "profile dcodex-sandbox " in apparmor
    assert "pivot_root," in apparmor


def test_the_profile_adds_the_sandbox_calls_and_no_other_privileged_one() -> None:
    profile = json.loads(PROFILE.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    names = allowed(profile)
    assert {"clone", "unshare", "mount", "umount2", "pivot_root", "sethostname"} <= names
    # What the runtime's default gives to CAP_SYS_ADMIN that the sandbox never uses.
    unlocked = {"bpf", "perf_event_open", "setns", "fsopen", "open_tree", "move_mount",
                "lookup_dcookie", "quotactl", "syslog", "name_to_handle_at", "setdomainname",
                "fanotify_init", "io_uring_setup"}  # fmt: skip
    assert not names & unlocked, names & unlocked
    clone3 = [rule for rule in profile["syscalls"] if rule["names"] == ["clone3"]]
    assert clone3 and all(rule["action"] == "SCMP_ACT_ERRNO" for rule in clone3)


def test_the_profile_is_what_the_generator_makes_of_the_runtime_default() -> None:
    assert RUNTIME_DEFAULT.exists(), "scripts/container-deps.sh installs the runtime's default"
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "seccomp-profile.py"), str(RUNTIME_DEFAULT)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert made == PROFILE.read_text(), "run `make seccomp` and commit the result"


def test_both_dockerignore_files_keep_the_same_paths() -> None:
    def rules(path: Path) -> list[str]:
        lines = path.read_text().splitlines()
        return [line for line in lines if line and not line.startswith("#")]

    assert rules(ROOT / ".dockerignore") == rules(DEPLOY / "docker" / "Dockerfile.dockerignore")
