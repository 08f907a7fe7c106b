"""deploy/k8s and deploy/docker, checked without a cluster or a Docker engine.

The manifests are rendered by kubectl's kustomize exactly as `kubectl apply -k` would,
then validated against the Kubernetes schemas (kubernetes-validate, offline) and
checked against the code: commands, settings, ports and privileges.
"""

from __future__ import annotations

from typing import Any

import click
import dockerfile
import kubernetes_validate
import pytest
from click.testing import CliRunner

from dcodex.shared.cli.main import main
from dcodex.shared.service.commands import service as service_cli
from dcodex.shared.service.commands import settings_from, settings_options
from dcodex.shared.service.config import Settings, env_var
from dcodex.shared.service.metrics import DEFAULT_PORTS
from tests.deploy_support import DEPLOY, ROOT, kustomize, nats_values

K8S = DEPLOY / "k8s"
OVERLAY = K8S / "overlays" / "example"
SERVICES = ("cache", "runner", "compiler")
KUBERNETES_VERSION = "1.31"  # appArmorProfile in securityContext needs 1.30+
SANDBOX_CAPABILITIES = {"SYS_ADMIN", "SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE", "KILL"}
# The NATS URL carries credentials: each container takes its own from the Secret.
# Settings without a default (the metrics port, a languages file) are optional, and so
# are the NATS login options: like the URL, they belong in a Secret, not the ConfigMap.
NOT_IN_CONFIGMAP = {"nats_url"}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return kustomize(OVERLAY)


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def deployment(manifests: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return of_kind(manifests, "Deployment")[f"dcodex-{service}"]


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_value(ctr: dict[str, Any], name: str) -> Any:
    return next(item for item in ctr["env"] if item["name"] == name)


def configmap(manifests: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [m for m in manifests if m["metadata"]["name"].startswith("dcodex-config")]
    data: dict[str, str] = config["data"]
    return data


def test_the_base_and_the_overlay_render_and_the_overlay_has_every_object(
    manifests: list[dict[str, Any]],
) -> None:
    assert kustomize(K8S / "base")
    kinds = {(m["kind"], m["metadata"]["name"].rsplit("-", 1)[0]) for m in manifests}
    for service in SERVICES:
        assert ("Deployment", "dcodex") in kinds
        assert f"dcodex-{service}" in of_kind(manifests, "Deployment")
        assert f"dcodex-{service}-metrics" in of_kind(manifests, "Service")
        assert f"dcodex-{service}" in of_kind(manifests, "PodDisruptionBudget")
    assert set(of_kind(manifests, "HorizontalPodAutoscaler")) == {
        "dcodex-runner",
        "dcodex-compiler",
    }
    assert of_kind(manifests, "NetworkPolicy") and of_kind(manifests, "ServiceMonitor")
    assert "dcodex-buckets" in of_kind(manifests, "Job")


def test_every_manifest_validates_against_the_kubernetes_schemas(
    manifests: list[dict[str, Any]],
) -> None:
    checked = 0
    for manifest in manifests:
        if manifest["kind"] == "ServiceMonitor":
            continue  # a CRD: no schema offline; its own test checks what it selects
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked == len(manifests) - 1


def test_a_wrong_field_fails_validation(manifests: list[dict[str, Any]]) -> None:
    broken = deployment(manifests, "runner")
    broken = {**broken, "spec": {**broken["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def dockerfile_stages() -> list[list[dockerfile.Command]]:
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DEPLOY / "docker" / "Dockerfile")):
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def test_containers_run_real_dcodex_service_subcommands(manifests: list[dict[str, Any]]) -> None:
    (entrypoint,) = [c for c in dockerfile_stages()[-1] if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json and list(entrypoint.value) == ["dcodex", "service"]
    service_command = service_cli
    assert isinstance(service_command, click.Command)
    choices = service_command.params[0].type
    assert isinstance(choices, click.Choice)
    for service in SERVICES:
        ctr = container(deployment(manifests, service))
        assert "command" not in ctr  # the image's ENTRYPOINT: `dcodex service`
        assert ctr["args"] == [service] and service in choices.choices
        result = CliRunner().invoke(main, ["service", *ctr["args"], "--help"])
        assert result.exit_code == 0, result.output


def test_the_bucket_job_runs_the_script_the_image_ships(manifests: list[dict[str, Any]]) -> None:
    ctr = container(of_kind(manifests, "Job")["dcodex-buckets"])
    script = ctr["command"][1]
    copies = [c.value for c in dockerfile_stages()[-1] if c.cmd == "COPY"]
    assert ("deploy/nats/buckets.py", script) in copies
    assert (ROOT / "deploy/nats/buckets.py").is_file()


def test_the_configmap_holds_every_setting_and_only_real_ones(
    manifests: list[dict[str, Any]],
) -> None:
    data = configmap(manifests)
    real = {env_var(name) for name in Settings.model_fields}
    assert set(data) <= real, set(data) - real
    required = {
        env_var(name)
        for name, field in Settings.model_fields.items()
        if field.default is not None and name not in NOT_IN_CONFIGMAP
    }
    assert required <= set(data), required - set(data)
    # Every value parses exactly as the services parse their environment.
    parsed: list[Settings] = []

    @click.command()
    @settings_options
    def probe(**values: Any) -> None:
        parsed.append(settings_from(values))

    result = CliRunner().invoke(probe, [], env=data)
    assert result.exit_code == 0, result.output
    assert parsed[0].max_concurrent_sandboxes == int(data["DCODEX_MAX_CONCURRENT_SANDBOXES"])
    assert parsed[0].isolation == "strict"


def test_each_container_gets_its_nats_url_from_the_secret_and_the_configmap(
    manifests: list[dict[str, Any]],
) -> None:
    config_name = next(m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap")
    (secret,) = of_kind(manifests, "Secret").values()
    for service in SERVICES:
        ctr = container(deployment(manifests, service))
        assert ctr["envFrom"] == [{"configMapRef": {"name": config_name}}]
        ref = env_value(ctr, "DCODEX_NATS_URL")["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": f"{service}-url"}
        assert f"{service}-url" in secret["data"]


def test_probes_and_scrapes_use_the_metrics_port(manifests: list[dict[str, Any]]) -> None:
    for service in SERVICES:
        manifest = deployment(manifests, service)
        ctr = container(manifest)
        ports = {port["name"]: port["containerPort"] for port in ctr["ports"]}
        assert ports == {"metrics": DEFAULT_PORTS[service]}
        assert int(env_value(ctr, "DCODEX_METRICS_PORT")["value"]) == DEFAULT_PORTS[service]
        for probe, path in (
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ):
            assert ctr[probe]["httpGet"] == {"path": path, "port": "metrics"}
        # /readyz may wait 5 s for the event loop: the probe must wait longer.
        assert ctr["readinessProbe"]["timeoutSeconds"] > 5
        metrics = of_kind(manifests, "Service")[f"dcodex-{service}-metrics"]
        assert metrics["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(DEFAULT_PORTS[service]),
            "prometheus.io/path": "/metrics",
        }
        assert metrics["spec"]["ports"] == [
            {"name": "metrics", "port": DEFAULT_PORTS[service], "targetPort": "metrics"}
        ]
        pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
        assert metrics["spec"]["selector"].items() <= pod_labels.items()


def test_the_service_monitor_scrapes_every_metrics_service(
    manifests: list[dict[str, Any]],
) -> None:
    (monitor,) = of_kind(manifests, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    selected = {
        name
        for name, service in of_kind(manifests, "Service").items()
        if wanted <= service["metadata"]["labels"].items()
    }
    assert selected == {f"dcodex-{s}-metrics" for s in SERVICES}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["dcodex"]
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]


def test_every_container_has_requests_and_limits(manifests: list[dict[str, Any]]) -> None:
    for manifest in [
        *of_kind(manifests, "Deployment").values(),
        *of_kind(manifests, "Job").values(),
    ]:
        resources = container(manifest)["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) == {"cpu", "memory"}, manifest["metadata"]["name"]


def test_the_cache_and_the_job_run_without_any_privilege(manifests: list[dict[str, Any]]) -> None:
    for manifest in (deployment(manifests, "cache"), of_kind(manifests, "Job")["dcodex-buckets"]):
        pod = manifest["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        context = container(manifest)["securityContext"]
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("service", ["runner", "compiler"])
def test_sandbox_services_get_exactly_the_sandbox_capabilities(
    manifests: list[dict[str, Any]], service: str
) -> None:
    manifest = deployment(manifests, service)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 0
    assert pod["automountServiceAccountToken"] is False
    context = container(manifest)["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"]["add"]) == SANDBOX_CAPABILITIES
    assert context["privileged"] is False
    assert context["readOnlyRootFilesystem"] is True
    # The API server refuses allowPrivilegeEscalation: false together with SYS_ADMIN.
    assert context.get("allowPrivilegeEscalation", True) is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container(manifest)["volumeMounts"]


def test_shutdown_grace_fits_in_the_termination_grace_period(
    manifests: list[dict[str, Any]],
) -> None:
    grace = float(configmap(manifests)["DCODEX_SHUTDOWN_GRACE_SECONDS"])
    for service in SERVICES:
        pod = deployment(manifests, service)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > grace


def test_autoscalers_budgets_and_network_policy_select_the_deployments(
    manifests: list[dict[str, Any]],
) -> None:
    deployments = of_kind(manifests, "Deployment")
    for name, hpa in of_kind(manifests, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert hpa["spec"]["minReplicas"] >= 2
        assert "replicas" not in deployments[name]["spec"]  # the HPA owns the count
    (policy,) = of_kind(manifests, "NetworkPolicy").values()
    for name, manifest in deployments.items():
        labels = manifest["spec"]["template"]["metadata"]["labels"].items()
        budget = of_kind(manifests, "PodDisruptionBudget")[name]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels
    job_labels = of_kind(manifests, "Job")["dcodex-buckets"]["spec"]["template"]["metadata"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= job_labels["labels"].items()


def test_the_network_policy_lets_pods_reach_only_nats_and_dns(
    manifests: list[dict[str, Any]],
) -> None:
    (policy,) = of_kind(manifests, "NetworkPolicy").values()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    destinations = {
        (rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
         tuple(sorted((p["protocol"], p["port"]) for p in rule["ports"])))
        for rule in policy["spec"]["egress"]
    }  # fmt: skip
    assert destinations == {
        ("nats", (("TCP", 4222),)),
        ("kube-system", (("TCP", 53), ("UDP", 53))),
    }
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": "metrics"}]


def test_the_dockerfile_is_multi_stage_and_the_final_stage_only_serves(
    manifests: list[dict[str, Any]],
) -> None:
    build, final = dockerfile_stages()
    installed = " ".join(c.original for c in final if c.cmd == "RUN")
    for package in ("gcc", "g++", "python3"):
        assert f" {package} " in installed
    for tool in ("build-essential", "python3-venv", "python3-pip", "python3-dev", "make", "git"):
        assert f" {tool} " not in installed + " "
    built = " ".join(c.original for c in build if c.cmd == "RUN")
    assert "helper_binary()" in built, "the sandbox helper is built at image build time"
    assert "helper_library()" in built, "and the zygote's library (the cache is read-only)"
    assert " musl-tools " in built + " ", "the helper's static build"
    (copy_venv,) = [c for c in final if c.cmd == "COPY" and "--from=build" in c.flags]
    assert copy_venv.value == ("/opt/dcodex", "/opt/dcodex")
    env = " ".join(c.original for c in final if c.cmd == "ENV")
    assert "DCODEX_CACHE_DIR=/opt/dcodex/helper" in env
    (user,) = [c for c in final if c.cmd == "USER"]
    assert not user.value[0].startswith("0") and user.value[0] != "root"
    expose = {int(port) for c in final if c.cmd == "EXPOSE" for port in c.value}
    assert expose == set(DEFAULT_PORTS.values())


def test_the_image_copies_only_files_that_exist_and_the_ignore_file_lets_in() -> None:
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in dockerfile_stages():
        for command in stage:
            if command.cmd != "COPY" or command.flags:
                continue
            for source in command.value[:-1]:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in allowed, source


def test_the_nats_values_make_a_three_node_jetstream_cluster_on_files() -> None:
    config = nats_values()["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    jetstream = config["jetstream"]
    assert jetstream["enabled"] and jetstream["fileStore"]["enabled"]
    assert jetstream["fileStore"]["pvc"]["enabled"]
    assert jetstream["memoryStore"]["enabled"] is False


def test_every_nats_password_comes_from_the_users_secret() -> None:
    values = nats_values()
    env = values["container"]["env"]
    for user in values["config"]["merge"]["authorization"]["users"]:
        variable = user["password"].strip("<> ").removeprefix("$")
        role = user["user"].removeprefix("dcodex-")
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "dcodex-nats-users", "key": role}


def test_the_docs_document_the_deployment() -> None:
    section = (ROOT / "docs" / "deployment.md").read_text()
    for needle in (
        "docker build -f deploy/docker/Dockerfile",
        "helm install nats nats/nats",
        "kubectl apply -k",
        "make image",
    ):
        assert needle in section, needle
