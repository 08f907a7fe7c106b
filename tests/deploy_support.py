"""What the deployment tests share: the files under deploy/ as data, and NATS servers
configured from them (one with the roles of deploy/nats/values.yaml, or a cluster).

Everything started here is stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import yaml

from dcodex.shared.service.nats_server import accepts_connections, nats_server_binary
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NATS_VALUES = DEPLOY / "nats" / "values.yaml"
ROLES = ("cache", "runner", "compiler", "setup", "client", "admin")

# `<< $VAR >>` in the chart's values: written into nats.conf as is, unquoted.
_VERBATIM = re.compile(r"^<<\s*(.*?)\s*>>$")


def nats_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(NATS_VALUES.read_text())
    return values


def nats_conf(block: Any) -> str:
    """A value of the chart's `config.merge` in nats-server config syntax (JSON-like,
    with `<< … >>` values unquoted, as the chart writes them)."""
    if isinstance(block, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {nats_conf(v)}" for k, v in block.items()) + "}"
    if isinstance(block, list):
        return "[" + ", ".join(nats_conf(item) for item in block) + "]"
    if isinstance(block, str) and (verbatim := _VERBATIM.match(block)):
        return verbatim.group(1)
    return json.dumps(block)


def tenant_of(role: str) -> str:
    """The tenant of a tenant role (docs/tenancy.md): its inbox is `_INBOX_<tenant>`."""
    users = nats_values()["config"]["merge"]["authorization"]["users"]
    (user,) = [u for u in users if u["user"] == f"dcodex-{role}"]
    for subject in user["permissions"]["subscribe"]["allow"]:
        if match := re.fullmatch(r"_INBOX_([^.]+)\.>", subject):
            return match.group(1)
    raise LookupError(f"dcodex-{role} is not a tenant")


def role_passwords() -> dict[str, str]:
    """A password per role, as the Secret dcodex-nats-users would hold them."""
    return {role: f"{role}-pw-{os.getpid()}" for role in ROLES}


def password_env(passwords: dict[str, str]) -> dict[str, str]:
    """The variables the chart's `container.env` sets from that Secret."""
    env = nats_values()["container"]["env"]
    keys = {name: spec["valueFrom"]["secretKeyRef"]["key"] for name, spec in env.items()}
    return {name: passwords[key] for name, key in keys.items()}


def role_url(url: str, role: str, passwords: dict[str, str]) -> str:
    """`nats://dcodex-ROLE:PASSWORD@host:port`: how services pass credentials today."""
    scheme, _, address = url.partition("://")
    return f"{scheme}://dcodex-{role}:{passwords[role]}@{address}"


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats-server.log"


@dataclass
class NatsServers:
    """One nats-server, or a cluster of them on loopback, each with JetStream on file
    storage and, with `auth`, the roles of deploy/nats/values.yaml."""

    directory: Path
    size: int = 1
    auth: bool = True
    passwords: dict[str, str] = field(default_factory=role_passwords)
    nodes: list[NatsNode] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> None:
        self.nodes = [
            NatsNode(f"n{i}", free_port(), free_port(), self.directory / f"n{i}")
            for i in range(self.size)
        ]
        env = {**os.environ, **password_env(self.passwords)}
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            config = node.directory / "nats.conf"
            config.write_text(self._config(node))
            with node.log_path.open("wb") as log:
                node.process = subprocess.Popen(
                    [nats_server_binary(), "--config", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        self._wait(timeout)

    def _config(self, node: NatsNode) -> str:
        lines = [
            f"server_name: {node.name}",
            "host: 127.0.0.1",
            f"port: {node.port}",
            f"jetstream: {{store_dir: {json.dumps(str(node.directory / 'js'))}}}",
        ]
        if self.size > 1:
            routes = ", ".join(f"nats://127.0.0.1:{other.cluster_port}" for other in self.nodes)
            lines.append(
                f"cluster: {{name: dcodex, host: 127.0.0.1, port: {node.cluster_port},"
                f" routes: [{routes}]}}"
            )
        if self.auth:
            merge = nats_values()["config"]["merge"]
            lines += [f"{key}: {nats_conf(value)}" for key, value in merge.items()]
        return "\n".join(lines) + "\n"

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            assert node.process is not None
            while not accepts_connections(node.url):
                if node.process.poll() is not None:
                    raise RuntimeError(f"nats-server {node.name} exited:\n{self.log(node)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats-server {node.name} did not start")
                time.sleep(0.05)
        for index in range(self.size):
            asyncio.run(self._wait_for_jetstream(index, deadline))

    async def _wait_for_jetstream(self, node: int, deadline: float) -> None:
        """Until the node's JetStream answers (in a cluster: a meta leader is elected)."""
        nc = await nats.connect(self.url("setup", node=node))
        try:
            while True:
                try:
                    await nc.jetstream().account_info()
                    return
                except (nats.errors.Error, nats.js.errors.Error):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()

    def url(self, role: str | None = None, node: int = 0) -> str:
        plain = self.nodes[node].url
        return role_url(plain, role, self.passwords) if role and self.auth else plain

    def log(self, node: NatsNode | None = None) -> str:
        chosen = node or self.nodes[0]
        return "".join(
            n.log_path.read_text(errors="replace") for n in ([chosen] if node else self.nodes)
        )

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The manifests `kubectl apply -k DIRECTORY` would apply (kubectl's own kustomize)."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]
