"""The deployment: the Kubernetes manifests are valid against the Kubernetes API schemas (offline,
with the schemas `kubernetes-validate` ships), have the seed tutorial's layout, and run the
command the cluster tests run; the Dockerfile builds in stages and runs as a non-root user."""

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.cluster_helpers import (
    IN_CLUSTER_BUS,
    IN_CLUSTER_STORE,
    manifest_container,
    manifest_documents,
    node_command,
)
from tests.processes import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


def documents() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in MANIFESTS:
        for doc in manifest_documents(path):
            found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_against_the_kubernetes_schemas(path: Path) -> None:
    version = kubernetes_validate.latest_version()
    for doc in manifest_documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_tutorial_layout() -> None:
    found = documents()
    assert {"etcd.yaml", "nats.yaml", "eventgate.yaml"} <= {p.name for p in MANIFESTS}
    etcd = found["StatefulSet", "etcd"]
    assert found["Service", "etcd"]["spec"]["ports"][0]["port"] == 2379
    assert etcd["spec"]["volumeClaimTemplates"]

    nats = found["StatefulSet", "nats"]
    [server] = nats["spec"]["template"]["spec"]["containers"]
    assert "--jetstream" in server["args"]
    store_dir = next(a for a in server["args"] if a.startswith("--store_dir="))
    [claim] = nats["spec"]["volumeClaimTemplates"]
    [mount] = server["volumeMounts"]
    assert (mount["name"], mount["mountPath"]) == (claim["metadata"]["name"], store_dir[12:])
    assert {p["port"] for p in found["Service", "nats"]["spec"]["ports"]} >= {4222}

    deployment = found["Deployment", "eventgate"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    [term] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = manifest_container()
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v1/status", "port": "config"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"events": 4000, "config": 4001}

    service = found["Service", "eventgate"]["spec"]
    assert service["type"] == "LoadBalancer"
    assert {(p["port"], p["targetPort"]) for p in service["ports"]} == {
        (4000, "events"),
        (4001, "config"),
    }
    assert service["selector"] == spec["selector"]["matchLabels"]


def test_the_container_runs_what_the_cluster_tests_run(tmp_path: Path) -> None:
    container = manifest_container()
    assert container["command"] == ["eventgate"]
    args = container["args"]
    assert args[0] == "serve"
    assert f"--store={IN_CLUSTER_STORE}" in args
    assert f"--bus={IN_CLUSTER_BUS}" in args
    command = node_command("etcd://127.0.0.1:1", "nats://127.0.0.1:2", tmp_path)
    assert command[1:4] == ["-m", "eventgate", "serve"]
    assert command[4:] == [
        {
            f"--store={IN_CLUSTER_STORE}": "--store=etcd://127.0.0.1:1",
            f"--bus={IN_CLUSTER_BUS}": "--bus=nats://127.0.0.1:2",
            "--host=0.0.0.0": "--host=127.0.0.1",
        }.get(arg, f"--data-dir={tmp_path}" if arg.startswith("--data-dir=") else arg)
        for arg in args[1:]
    ]
    # The in-cluster names are the Services the other manifests define.
    found = documents()
    assert ("Service", "etcd") in found and ("Service", "nats") in found
    # The data dir is a writable volume (the root filesystem is read-only).
    data_dir = next(a for a in args if a.startswith("--data-dir="))[11:]
    assert data_dir in {m["mountPath"] for m in container["volumeMounts"]}


def test_the_dockerfile_builds_in_stages_and_runs_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(stages) >= 2 and stages[0], "a named build stage, then the runtime stage"
    final = text[text.rindex("\nFROM ") :]
    assert "COPY --from=" in final
    assert "uv sync --frozen --no-dev" in text
    [user] = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert user not in {"root", "0"}
    uid = re.search(r"--uid\s+(\d+)", final)
    assert uid is not None and int(uid[1]) != 0
    pod = documents()["Deployment", "eventgate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid[1])
    [entrypoint] = re.findall(r"^ENTRYPOINT\s+(.+)$", final, re.MULTILINE)
    assert entrypoint.strip() == '["eventgate"]'  # the manifest's command
    assert re.search(r"^EXPOSE\s+4000\s+4001", final, re.MULTILINE)
