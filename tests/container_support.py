"""What the container tests share: a docker daemon of their own, the image, and each
service run as a container with its Deployment's securityContext (read from deploy/k8s).

The daemon never meets another one on the machine: its own socket, data root, exec
root and pid file; no bridge, no iptables, no forwarding. Containers use the host's
network only, so every byte stays on loopback. The data root is kept between runs
(DCODEX_DOCKER_ROOT, locked while a daemon uses it): images and build
layers are reused, and a second run builds nothing.

Everything started here is stopped by PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.deploy_support import DEPLOY, ROOT, kustomize

BUILD_CACHE = Path(
    os.environ.get("DCODEX_BUILD_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dcodex-build"
)
# The daemons' data roots, kept between runs: every directory on the way must be
# searchable by others, for the user-namespaced daemon's remapped root.
DOCKER_ROOT = Path(os.environ.get("DCODEX_DOCKER_ROOT") or "/var/tmp/dcodex-docker")
IMAGE = "dcodex:test"
SECCOMP_DIR = DEPLOY / "seccomp"
# Where a kubelet looks for `Localhost` seccomp profiles; the manifests name files in it.
KUBELET_SECCOMP_ROOT = "/var/lib/kubelet/seccomp"


def missing_tools() -> list[str]:
    """The Debian packages the container tests need that this machine lacks."""
    wanted = {"dockerd": "docker.io", "docker": "docker.io", "debootstrap": "debootstrap"}
    return sorted({package for tool, package in wanted.items() if shutil.which(tool) is None})


@dataclass
class Dockerd:
    """A docker daemon of the tests' own; `userns_remap` runs every container in a user
    namespace (root in it is an unprivileged uid on the host)."""

    name: str
    userns_remap: bool = False
    process: subprocess.Popen[bytes] | None = None
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dcx-dockerd-")))
    _lock: IO[str] | None = None

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def client(self) -> list[str]:
        return ["docker", "--host", f"unix://{self.socket}"]

    def start(self, timeout: float = 120.0) -> None:
        data_root = DOCKER_ROOT / self.name
        data_root.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o711)
        # One daemon per data root: a concurrent run waits for this one to finish.
        self._lock = (data_root.parent / f"{self.name}.lock").open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        argv = [
            "dockerd",
            "--host", f"unix://{self.socket}",
            "--data-root", str(data_root),
            "--exec-root", str(self.run_dir / "exec"),
            "--pidfile", str(self.run_dir / "dockerd.pid"),
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--ip-masq=false",
        ]  # fmt: skip
        if self.userns_remap:
            argv.append("--userns-remap=default")
        with (self.run_dir / "dockerd.log").open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while subprocess.run([*self.client, "version"], capture_output=True).returncode != 0:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd {self.name} exited:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dockerd {self.name} did not start:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        return (self.run_dir / "dockerd.log").read_text(errors="replace")[-4000:]

    def docker(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        done = subprocess.run(
            [*self.client, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def image_id(self, image: str) -> str | None:
        found = self.docker("image", "inspect", "--format", "{{.Id}}", image, check=False)
        return found or None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            for container in self.docker("ps", "-q", check=False).split():
                self.docker("rm", "--force", "--volumes", container, check=False)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._lock is not None:
            self._lock.close()
        # dockerd leaves its network namespace file (exec root's netns/default) mounted.
        for mount_point in sorted(self._mounts_inside(), reverse=True):
            subprocess.run(["umount", "--lazy", mount_point], capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _mounts_inside(self) -> list[str]:
        inside = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4]
            if point.startswith(f"{self.run_dir}/"):
                inside.append(point)
        return inside


def build_image(daemon: Dockerd, tag: str = IMAGE) -> None:
    """`make image` against this daemon (builds the base with debootstrap when no
    registry is reachable)."""
    env = {**os.environ, "DOCKER": " ".join(daemon.client)}
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh"), tag],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the image did not build:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    # The image of the last run, untagged now: the kept data root would only grow.
    daemon.docker("image", "prune", "--force")


def copy_image(source: Dockerd, target: Dockerd, tag: str = IMAGE) -> None:
    """The image into another daemon (save | load), unless it has that very image."""
    if target.image_id(tag) == source.image_id(tag):
        return
    with tempfile.TemporaryDirectory() as scratch:
        archive = str(Path(scratch) / "image.tar")
        source.docker("save", "--output", archive, tag)
        target.docker("load", "--input", archive)
    target.docker("image", "prune", "--force")


# --- the Deployments, as docker run options ---------------------------------------


def deployments() -> dict[str, dict[str, Any]]:
    """The Deployments of deploy/k8s/base by service name ("runner", ...)."""
    found = {}
    for doc in kustomize(DEPLOY / "k8s" / "base"):
        if doc["kind"] == "Deployment":
            found[doc["metadata"]["name"].removeprefix("dcodex-")] = doc
    return found


def config_env() -> dict[str, str]:
    """The ConfigMap dcodex-config every Deployment takes its settings from."""
    for doc in kustomize(DEPLOY / "k8s" / "base"):
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("dcodex-config"):
            return {key: str(value) for key, value in doc["data"].items()}
    raise LookupError("no ConfigMap dcodex-config in deploy/k8s/base")


def seccomp_option(profile: dict[str, Any]) -> list[str]:
    kind = profile["type"]
    if kind == "RuntimeDefault":
        return []  # docker's default profile
    if kind == "Localhost":
        relative = profile["localhostProfile"]
        return ["--security-opt", f"seccomp={SECCOMP_DIR / Path(relative).name}"]
    return ["--security-opt", "seccomp=unconfined"]


def apparmor_option(profile: dict[str, Any] | None) -> list[str]:
    """docker's AppArmor option for the pod's profile, where the host has AppArmor."""
    enabled = Path("/sys/module/apparmor/parameters/enabled")
    if profile is None or not enabled.exists() or enabled.read_text().strip() != "Y":
        return []
    kind = profile["type"]
    if kind == "Unconfined":
        return ["--security-opt", "apparmor=unconfined"]
    if kind == "Localhost":
        return ["--security-opt", f"apparmor={profile['localhostProfile']}"]
    return []  # RuntimeDefault: docker-default


def cpu_quantity(value: str) -> float:
    """A Kubernetes CPU quantity ("2", "500m") in CPUs."""
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


def docker_run_options(deployment: dict[str, Any]) -> list[str]:
    """The `docker run` options that give a container exactly what its Deployment's
    pod and container securityContext (and resources) say."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pod_context = pod.get("securityContext", {})
    context = {**pod_context, **container.get("securityContext", {})}
    # A cgroup namespace of its own, as containerd and CRI-O give every container on
    # cgroup v2 (docker's default on v1 is the host's).
    options = ["--network", "host", "--cgroupns", "private"]
    if "runAsUser" in context:
        options += ["--user", f"{context['runAsUser']}:{context.get('runAsGroup', 0)}"]
    if context.get("privileged"):
        options.append("--privileged")
    if context.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if context.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    capabilities = context.get("capabilities", {})
    options += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
    options += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]
    options += seccomp_option(context.get("seccompProfile", {"type": "RuntimeDefault"}))
    options += apparmor_option(context.get("appArmorProfile"))
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        options += ["--memory", str(limits["memory"]).replace("Gi", "g").replace("Mi", "m")]
    if "cpu" in limits:
        options += ["--cpus", str(min(cpu_quantity(str(limits["cpu"])), os.cpu_count() or 1))]
    for mount in container.get("volumeMounts", []):
        # An emptyDir: a volume of the container's own, removed with it.
        options += ["--volume", mount["mountPath"]]
    return options


@dataclass
class ServiceContainer:
    name: str
    daemon: Dockerd
    container_id: str

    @property
    def pid(self) -> int:
        """The service's pid on the host (containers share the host's pid view)."""
        return int(self.daemon.docker("inspect", "--format", "{{.State.Pid}}", self.container_id))

    def logs(self) -> str:
        done = subprocess.run(
            [*self.daemon.client, "logs", self.container_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return done.stdout

    def remove(self) -> None:
        self.daemon.docker("rm", "--force", "--volumes", self.container_id, check=False)

    def inspect(self) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.daemon.docker("inspect", self.container_id))
        return found[0]


def run_service(daemon: Dockerd, name: str, nats_url: str, metrics_port: int) -> ServiceContainer:
    """Start the service `name` as its Deployment would, against `nats_url`."""
    deployment = deployments()[name]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {**config_env(), "DCODEX_NATS_URL": nats_url, "DCODEX_METRICS_PORT": str(metrics_port)}
    env_options = [option for key, value in env.items() for option in ("--env", f"{key}={value}")]
    container_id = daemon.docker(
        "run", "--detach", "--name", f"dcodex-{name}-{os.getpid()}",
        *docker_run_options(deployment), *env_options, IMAGE, *container["args"],
    )  # fmt: skip
    return ServiceContainer(name, daemon, container_id)
