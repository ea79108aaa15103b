"""deploy/k8s: valid against the Kubernetes API schemas, and consistent with each other.

``kubernetes-validate`` (the ``test`` extra) checks every manifest, strictly (no unknown
fields), against the oldest and the newest Kubernetes it knows that we support. The rest
checks what a schema cannot: selectors that match, probes on the broker's endpoints,
every referenced ConfigMap and Secret defined, and a broker.toml the broker accepts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.config import load_broker_config
from tests.conftest import IN_CI
from tests.deploy.conftest import DEPLOY

K8S = DEPLOY / "k8s"
VERSIONS = ("1.28.0", "1.37.0")
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def all_resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in documents(p)}


def _validator() -> Any:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]  # no type hints
    except ImportError:
        message = "kubernetes-validate is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true forbids skipping it")
        pytest.skip(message)
    return kubernetes_validate


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path: Path, version: str) -> None:
    kv = _validator()
    for doc in documents(path):
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} "
                        f"(Kubernetes {version}): {exc.path}: {exc.message}")


def test_kustomization_applies_everything_but_the_example_secrets() -> None:
    kustomization = documents(K8S / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in MANIFESTS if p.name != "secrets.example.yaml")
    for doc in documents(K8S / "secrets.example.yaml"):
        assert doc["kind"] in ("Secret", "ConfigMap")


def _deployment() -> dict[str, Any]:
    return all_resources()[("Deployment", "samsvar-broker")]


def test_broker_deployment_replicas_probes_and_security() -> None:
    deployment = _deployment()
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001  # the image's
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # in-flight queries (max_deadline_ms 30 s) finish before the pod is killed
    assert pod["terminationGracePeriodSeconds"] > 30


def test_service_and_pdb_select_the_broker_pods() -> None:
    resources = all_resources()
    deployment = _deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = resources[("Service", "samsvar-broker")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = resources[("PodDisruptionBudget", "samsvar-broker")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_every_config_map_and_secret_the_pods_use_is_defined() -> None:
    resources = all_resources()
    pod = _deployment()["spec"]["template"]["spec"]
    wanted = set()
    for volume in pod["volumes"]:
        if "configMap" in volume:
            wanted.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            wanted.add(("Secret", volume["secret"]["secretName"]))
    for env in pod["containers"][0]["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            wanted.add(("Secret", ref["name"]))
            assert ref["key"] in resources[("Secret", ref["name"])]["stringData"]
    assert wanted <= set(resources), wanted - set(resources)


def test_the_config_map_is_a_broker_config_with_mounted_files(tmp_path: Path) -> None:
    resources = all_resources()
    pod = _deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The container puts the pod's name in for @INSTANCE@.
    assert "${POD_NAME}" in container["args"][0] and "@INSTANCE@" in container["args"][0]
    pod_name = {e["name"]: e for e in container["env"]}["POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    text = resources[("ConfigMap", "samsvar-broker-config")]["data"]["broker.toml"]
    path = tmp_path / "broker.toml"
    path.write_text(text.replace("@INSTANCE@", "samsvar-broker-7d4b9c6f5-x2x7q"),
                    encoding="utf-8")
    config = load_broker_config(path)
    assert config.instance == "samsvar-broker-7d4b9c6f5-x2x7q"
    assert (config.host, config.port) == ("0.0.0.0", 8080)
    assert config.access_log.kind == "postgresql"
    assert config.access_log.dsn is not None and ":" not in config.access_log.dsn.split("@")[0][
        len("postgresql://"):], "no password in the ConfigMap: PGPASSWORD comes from a Secret"
    assert config.mqtt.tls

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {"registry": config.registry_path, "broker key": config.key_path,
             "MQTT CA": config.mqtt.ca, "MQTT certificate": config.mqtt.cert,
             "MQTT key": config.mqtt.key}
    for what, file in files.items():
        assert file is not None, what
        mount = str(Path(file).parent)
        assert mount in mounts, f"the {what} {file} is on no mounted volume"
        volume = volumes[mounts[mount]]
        source = volume.get("configMap", {}).get("name") or volume["secret"]["secretName"]
        kind = "ConfigMap" if "configMap" in volume else "Secret"
        held = resources[(kind, source)].get("data") or resources[(kind, source)]["stringData"]
        assert Path(file).name in held, f"{kind} {source} holds no {Path(file).name}"
    # the rendered config goes to /tmp, which must be writable with a read-only root
    assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]]
    assert re.search(r"> /tmp/broker\.toml\b.*--config /tmp/broker\.toml", container["args"][0])
