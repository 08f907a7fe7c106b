"""The image, built by the project and run as Kubernetes would run it.

A docker daemon of the tests' own builds deploy/docker/Dockerfile (`make image`: where
no registry answers, the base is made with debootstrap) and runs each service as a
container with exactly its Deployment's securityContext, read from deploy/k8s
(tests/container_support.py turns it into `docker run` options), on the host network
against a NATS server with the roles of deploy/nats/values.yaml; the bucket Job runs
first, as in a cluster. The pipeline and escape suites then run against those
containers, unchanged: their `client`, `nats_url` and `stack` fixtures are this
module's.

The runner and compiler Deployments say `hostUsers: false`. Docker cannot put a user
namespace on the host network, so that part runs on a second daemon with
`--userns-remap` and no network at all: the whole stack (`dcodex up`) inside one such
container with the runner's securityContext, and a client there attacking through it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.sandbox.cgroups_v2 import is_pure_v2
from dcodex.shared.sandbox.isolation import CGROUP_LAYERS, STRICT_LAYERS
from tests.conftest import free_port
from tests.container_support import (
    IMAGE,
    Dockerd,
    ServiceContainer,
    build_image,
    copy_image,
    deployments,
    docker_run_options,
    missing_tools,
    run_service,
)
from tests.deploy_support import ROOT, NatsServers, kustomize, tenant_of

# The suites that run against the containers, as they are (pytest collects what a
# module imports); the corrupt-artifact test is left out: it writes to JetStream,
# which the client role may not.
from tests.test_pipeline import (  # noqa: F401
    test_abort_is_signaled,
    test_allocation_past_memory_limit,
    test_busy_loop_hits_cpu_limit,
    test_c_allocation_past_memory_limit,
    test_c_reads_stdin_and_args,
    test_cache_false_neither_reads_nor_writes,
    test_compile_error_has_diagnostics,
    test_concurrent_runs_do_not_mix,
    test_cpp_alias_and_case,
    test_output_flood_is_capped,
    test_python_ok_with_stdin,
    test_runtime_error_keeps_exit_code_and_stderr,
    test_same_source_compiles_once,
    test_second_identical_request_is_a_cache_hit,
    test_segfault_is_signaled,
    test_sleeping_program_hits_wall_clock,
)
from tests.test_sandbox_security import (  # noqa: F401
    test_a_double_forked_daemon_does_not_outlive_its_run,
    test_allocating_past_the_memory_limit,
    test_busy_loop_hits_the_cpu_limit,
    test_c_program_cannot_reach_an_outside_address,
    test_cannot_connect_to_the_nats_port,
    test_cannot_read_etc_shadow,
    test_cannot_read_the_runners_files_or_environment,
    test_cannot_see_another_runs_working_directory,
    test_filling_the_disk_stops_at_the_cap,
    test_fork_bomb_is_contained_and_leaves_nothing,
    test_kill_minus_one_hits_nothing_outside,
    test_proc_shows_only_the_runs_own_processes,
    test_ptrace_of_another_process_fails,
    test_sleeping_past_the_wall_clock,
    test_writes_outside_the_working_directory_fail_and_tmp_vanishes,
)

# The first test waits for the image to build (minutes on a cold cache).
pytestmark = [pytest.mark.containers, pytest.mark.bus, pytest.mark.timeout(1800)]

SANDBOXED = ("runner", "compiler")
PROBE = Path(__file__).with_name("userns_probe.py")


def userns_layers() -> set[str]:
    """What a user-namespaced runner gets: every strict layer on cgroup v2; on a v1
    node every one but the cgroups' (v1 cgroups belong to the host's root, whom a
    user namespace cannot be), so there it runs with `--isolation best`."""
    layers = set(STRICT_LAYERS)
    return layers if is_pure_v2() else layers - set(CGROUP_LAYERS)


@pytest.fixture(scope="session")
def daemon() -> Iterator[Dockerd]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"the container tests need: {' '.join(missing)} (scripts/container-deps.sh)")
    plain = Dockerd("plain")
    plain.start()
    try:
        build_image(plain)
        yield plain
    finally:
        plain.stop()


@pytest.fixture(scope="session")
def userns_daemon(daemon: Dockerd) -> Iterator[Dockerd]:
    remapped = Dockerd("userns", userns_remap=True)
    remapped.start()
    try:
        copy_image(daemon, remapped)
        yield remapped
    finally:
        remapped.stop()


@dataclass
class ContainerStack:
    """The services as containers; `processes` as ServiceProcesses has it (host pids)."""

    nats: NatsServers
    containers: dict[str, ServiceContainer] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.nats.url("admin")

    @property
    def processes(self) -> dict[str, list[ServiceContainer]]:
        return {name: [container] for name, container in self.containers.items()}

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{c.logs()[-3000:]}" for n, c in self.containers.items())


def run_bucket_job(daemon: Dockerd, nats: NatsServers) -> None:
    """The Job dcodex-buckets, as the cluster runs it (one replica: one NATS server)."""
    job = next(doc for doc in kustomize(ROOT / "deploy" / "k8s" / "base") if doc["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = [arg if arg != "3" else "1" for arg in container["command"]]
    options = docker_run_options(job)
    daemon.docker(
        "run", "--rm", *options, "--env", f"DCODEX_NATS_URL={nats.url('setup')}",
        "--entrypoint", command[0], IMAGE, *command[1:],
    )  # fmt: skip


# Module-scoped: its tenant login (an environment variable) must not outlive these tests.
@pytest.fixture(scope="module")
def container_stack(
    daemon: Dockerd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContainerStack]:
    nats = NatsServers(tmp_path_factory.mktemp("container-nats"))
    nats.start()
    stack = ContainerStack(nats)
    # Every client of these tests (in this process or a `dcodex bus` child) logs in as
    # the operator's tenant `admin`, as a tenant must (docs/tenancy.md).
    os.environ["DCODEX_NATS_TENANT"] = tenant_of("admin")
    try:
        run_bucket_job(daemon, nats)
        for name in ("cache", "compiler", "runner"):
            stack.containers[name] = run_service(daemon, name, nats.url(name), free_port())
        wait_until_serving(stack)
        yield stack
    finally:
        for container in stack.containers.values():
            container.remove()
        nats.stop()
        os.environ.pop("DCODEX_NATS_TENANT", None)


def wait_until_serving(stack: ContainerStack, timeout: float = 180.0) -> None:
    import asyncio

    async def answering() -> set[str]:
        async with await DcodexClient.connect(stack.url) as client:
            return {answer["name"] for answer in await client.ping(wait_s=0.5)}

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {"dcodex-cache", "dcodex-runner", "dcodex-compiler"} <= asyncio.run(answering()):
            return
        for container in stack.containers.values():
            if container.inspect()["State"]["Status"] != "running":
                raise RuntimeError(f"{container.name} stopped:\n{stack.logs()}")
        time.sleep(0.5)
    raise TimeoutError(f"the containers did not serve in {timeout} s:\n{stack.logs()}")


# The fixtures the imported suites ask for.


@pytest.fixture
async def client(container_stack: ContainerStack) -> AsyncIterator[DcodexClient]:
    async with await DcodexClient.connect(container_stack.url) as connected:
        yield connected


@pytest.fixture
def nats_url(container_stack: ContainerStack) -> str:
    return container_stack.nats.url()


@pytest.fixture
def stack(container_stack: ContainerStack) -> ContainerStack:
    return container_stack


# --- what only containers show -----------------------------------------------------


def host_config(container: ServiceContainer) -> dict[str, Any]:
    config: dict[str, Any] = container.inspect()["HostConfig"]
    return config


def test_each_container_has_exactly_its_deployments_security_context(
    container_stack: ContainerStack,
) -> None:
    for name, container in container_stack.containers.items():
        deployment = deployments()[name]
        spec = deployment["spec"]["template"]["spec"]
        context = spec["containers"][0]["securityContext"]
        config = host_config(container)
        assert set(config["CapDrop"]) == {"ALL"}
        added = sorted(cap.removeprefix("CAP_") for cap in config["CapAdd"] or [])
        assert added == sorted(context["capabilities"].get("add", []))
        assert config["ReadonlyRootfs"] is True
        assert config["Privileged"] is False
        assert config["NetworkMode"] == "host"
        user = container.inspect()["Config"]["User"]
        assert (
            user
            == f"{spec['securityContext']['runAsUser']}:{spec['securityContext']['runAsGroup']}"
        )
        seccomp = [opt for opt in config["SecurityOpt"] or [] if opt.startswith("seccomp=")]
        profile = spec["securityContext"]["seccompProfile"]
        assert profile["type"] != "Unconfined"
        if name in SANDBOXED:
            assert profile["type"] == "Localhost"
            shipped = json.loads((ROOT / "deploy" / "seccomp" / "dcodex-sandbox.json").read_text())
            assert json.loads(seccomp[0].removeprefix("seccomp=")) == shipped
        else:
            assert profile["type"] == "RuntimeDefault" and not seccomp
            assert "no-new-privileges" in config["SecurityOpt"]


def test_the_sandboxed_services_say_which_layers_they_have(
    container_stack: ContainerStack,
) -> None:
    for name in SANDBOXED:
        lines = [
            json.loads(line)
            for line in container_stack.containers[name].logs().splitlines()
            if line.startswith("{") and "sandbox_isolation" in line
        ]
        assert lines, container_stack.logs()
        assert set(lines[0]["layers"]) == set(STRICT_LAYERS), lines[0]
        assert lines[0]["mode"] == "strict"


async def test_every_expected_layer_reaches_clients(client: DcodexClient) -> None:
    languages = await client.languages()
    assert {"c", "cpp", "python"} <= {lang.id for lang in languages.languages}
    result = await client.run({"language": "python", "code": "print('in a container')"})
    assert result.status == "ok" and result.stdout == "in a container\n", result


SYSCALL_PROBE = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def call(number, *args):
    result = libc.syscall(number, *args)
    return "allowed" if result >= 0 else errno.errorcode[ctypes.get_errno()]
# x86-64 numbers: unshare 272 (CLONE_NEWNS), bpf 321, perf_event_open 298, setns 308.
print(call(272, 0x00020000), call(321, 0, 0, 0), call(298, 0, 0, -1, -1, 0), call(308, -1, 0))
"""


def test_the_profile_takes_away_what_sys_admin_would_unlock(daemon: Dockerd) -> None:
    """With the runner's exact options the sandbox's calls work and the others that
    CAP_SYS_ADMIN unlocks in the runtime's default profile (bpf, perf_event_open,
    setns) are refused; under the default profile they would reach the kernel."""

    def probe(options: list[str]) -> list[str]:
        return daemon.docker(
            "run", "--rm", *options, "--entrypoint", "python3", IMAGE, "-c", SYSCALL_PROBE
        ).split()  # fmt: skip

    runner = docker_run_options(deployments()["runner"])
    at = runner.index(next(option for option in runner if option.startswith("seccomp=")))
    with_default = runner[: at - 1] + runner[at + 1 :]
    assert probe(runner) == ["allowed", "EPERM", "EPERM", "EPERM"]
    unlocked = probe(with_default)
    assert unlocked[0] == "allowed" and "EPERM" not in unlocked[1:], unlocked


# --- hostUsers: false --------------------------------------------------------------


def test_in_a_user_namespace_the_stack_serves_and_contains(userns_daemon: Dockerd) -> None:
    """The runner's securityContext in a user namespace (root in it is uid 100000+ on
    the host, its capabilities worth nothing outside): the whole stack serves and
    every attack of the probe is contained."""
    deployment = deployments()["runner"]
    assert deployment["spec"]["template"]["spec"]["hostUsers"] is False
    options = docker_run_options(deployment)
    options[options.index("host")] = "none"  # user namespaces can't share the host's
    options += ["--volume", f"{PROBE}:/probe.py:ro"]
    if not is_pure_v2():
        options += ["--env", "DCODEX_ISOLATION=best"]
    done = subprocess.run(
        [
            *userns_daemon.client, "run", "--rm", *options,
            "--entrypoint", "dcodex", IMAGE, "up", "--", "python", "/probe.py",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["uid_map"].split()[:2] == ["0", "100000"], report["uid_map"]
    assert set(report["layers"]) == userns_layers(), report["layers"]
    assert report["c"] == "ok 42", report
    assert report["shadow"].startswith("blocked"), report
    assert report["network"] == "blocked", report
    # Contained either way: the process limit, or (every copy printing its traceback of
    # the refused fork to the same stderr) the output limit first.
    assert report["fork_bomb"] in ("process_limit", "output_limit", "ok", "runtime_error"), report
    assert report["after"] == "45", report
