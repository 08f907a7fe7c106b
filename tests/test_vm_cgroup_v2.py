"""The cgroup, isolation and escape tests on a real cgroup-v2-only kernel.

scripts/vm-run.sh boots a Debian guest under qemu (no network device) whose kernel
has no cgroup v1 at all; tests/vm/guest.sh runs the tests there, as on a node and as
in a container with a cgroup namespace of its own, and writes JUnit reports that this
test reads: every test must have run and passed (none skipped but the one that only
applies to the other scenario).

Emulation makes CPU-bound work 15-30x slower, so the guest runs the cgroup module,
the isolation tests that read the kernel's counters, and the escape suite through a
real stack of services but for the attacks that compile C or burn CPU on purpose.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")  # the guest's: a venv made with it works inside

pytestmark = pytest.mark.vm

# What the node run adds to tests/test_cgroups_v2.py: the kernel-counter tests of the
# isolation module and the escape suite through a real stack of services, but for the
# attacks that compile C first or burn CPU on purpose (minutes each under emulation).
# The isolation module's OOM test zeroes 1.2 GB, which emulation turns into a CPU-time
# verdict; test_cgroups_v2.py proves the OOM verdict with less memory.
NODE_TESTS = [
    "tests/test_isolation.py::test_cpu_time_counts_every_process_of_the_tree",
    "tests/test_isolation.py::test_peak_memory_is_the_whole_tree",
    "tests/test_isolation.py::test_process_limit_is_per_run_and_reported",
    "tests/test_isolation.py::test_user_namespace_layers_hold_without_the_per_slot_uid",
    "tests/test_sandbox_security.py",
    "-k",
    "not c_program and not busy_loop and not c-code and not ptrace",
]


def guest_python() -> Path:
    """A Python with the project installed that also runs in the guest: this venv when
    it was made from the system Python, else .venv-vm (made once per checkout)."""
    if Path(sys.base_prefix).resolve() == Path("/usr") and ROOT in Path(sys.prefix).parents:
        return Path(sys.prefix) / "bin" / "python"
    venv = ROOT / ".venv-vm"
    stamp = venv / "dcodex-stamp"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "-e", f"{ROOT}[dev]"], check=True
        )
        stamp.write_text(wanted)
    return venv / "bin" / "python"


def junit(path: Path) -> dict[str, str]:
    """Each test case of a JUnit report: "passed", "skipped", "failed" or "error"."""
    outcomes = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        outcomes[name] = {"failure": "failed"}.get(outcome, outcome)
    return outcomes


@pytest.mark.timeout(1500)
def test_cgroup_v2_layers_isolation_and_escapes_hold_on_a_v2_only_kernel(
    tmp_path: Path,
) -> None:
    python = guest_python()
    reports = tmp_path / "reports"
    reports.mkdir()
    command = [
        str(ROOT / "scripts" / "vm-run.sh"),
        "--share", str(ROOT),
        "--share", str(tmp_path),
        "--timeout", "1200",
        "--",
        "bash", "tests/vm/guest.sh", str(python), str(reports), *NODE_TESTS,
    ]  # fmt: skip
    if ROOT not in python.parents:
        command[1:1] = ["--share", str(python.parent.parent)]
    ran = subprocess.run(command, capture_output=True, text=True, timeout=1400)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-6000:]

    node, container = junit(reports / "node.xml"), junit(reports / "container.xml")
    container_only = "tests.test_cgroups_v2::test_in_a_container_the_runner_takes_its_own_subtree"
    assert node.pop(container_only) == "skipped"
    assert set(node.values()) == {"passed"}, node
    assert set(container.values()) == {"passed"}, container
    assert len(container) >= 7, container
    ran_modules = {name.split("::")[0] for name in node}
    assert ran_modules == {
        "tests.test_cgroups_v2",
        "tests.test_isolation",
        "tests.test_sandbox_security",
    }, ran_modules
