"""deploy/: stable names (the e2e tests rely on them) and a Deployment whose command line is valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vkubelet.domain.provider import Taint
from vkubelet.entrypoints.cli_args import RunCommand, parse_command_line

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def documents(name: str) -> list[dict[str, Any]]:
    with (DEPLOY / name).open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def rules_for(role: dict[str, Any], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in role["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_rbac_names_are_stable() -> None:
    docs = documents("rbac.yaml")
    assert [d["metadata"]["name"] for d in by_kind(docs, "Namespace")] == ["vkubelet-system"]
    (account,) = by_kind(docs, "ServiceAccount")
    assert (account["metadata"]["namespace"], account["metadata"]["name"]) == (
        "vkubelet-system",
        "virtual-kubelet",
    )
    for binding in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "virtual-kubelet", "namespace": "vkubelet-system"}
        ]


def test_cluster_role_is_least_privilege() -> None:
    docs = documents("rbac.yaml")
    (role,) = by_kind(docs, "ClusterRole")
    assert rules_for(role, "", "pods") == {"get", "list", "watch", "delete"}
    assert rules_for(role, "", "pods/status") == {"patch", "update"}
    assert rules_for(role, "", "nodes") == {"get", "create", "patch"}
    assert rules_for(role, "", "nodes/status") == {"patch"}
    assert rules_for(role, "", "events") == {"create", "patch"}
    assert rules_for(role, "", "secrets") == {"get"}
    assert rules_for(role, "", "configmaps") == {"get"}
    assert rules_for(role, "", "services") == {"list"}
    assert rules_for(role, "", "serviceaccounts/token") == {"create"}  # projected tokens
    assert rules_for(role, "", "serviceaccounts") == set()
    assert rules_for(role, "authentication.k8s.io", "tokenreviews") == {"create"}
    assert rules_for(role, "authorization.k8s.io", "subjectaccessreviews") == {"create"}
    assert rules_for(role, "coordination.k8s.io", "leases") == set()  # namespaced Role only
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]


def test_leases_are_granted_in_kube_node_lease_and_the_election_namespace_only() -> None:
    docs = documents("rbac.yaml")
    roles = {role["metadata"]["namespace"]: role for role in by_kind(docs, "Role")}
    assert set(roles) == {"kube-node-lease", "vkubelet-system"}
    node_leases, election = roles["kube-node-lease"], roles["vkubelet-system"]
    assert rules_for(node_leases, "coordination.k8s.io", "leases") == {"get", "create", "update", "patch"}
    # --leader-elect: read, create once, renew by patch; nothing else, and nothing but leases.
    assert rules_for(election, "coordination.k8s.io", "leases") == {"get", "create", "patch"}
    assert [rule["resources"] for rule in election["rules"]] == [["leases"]]
    bindings = {binding["metadata"]["namespace"]: binding for binding in by_kind(docs, "RoleBinding")}
    assert set(bindings) == set(roles)
    for namespace, binding in bindings.items():
        assert binding["roleRef"]["name"] == roles[namespace]["metadata"]["name"]


def test_deployment_command_line_parses() -> None:
    docs = documents("deployment.yaml")
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "virtual-kubelet"
    assert deployment["metadata"]["namespace"] == "vkubelet-system"
    (container,) = pod["containers"]
    assert container["command"] == ["virtual-kubelet"]
    env_names = {entry["name"] for entry in container["env"]}
    assert "VKUBELET_POD_IP" in env_names
    assert [p["containerPort"] for p in container["ports"]] == [10250]
    # As the pod sees it: in a cluster, with the pod IP from the downward API.
    environ = {
        "HOME": "/nonexistent",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "VKUBELET_POD_IP": "10.244.1.7",
    }
    command = parse_command_line(container["args"], environ, providers=("mock", "grpc"))
    assert isinstance(command, RunCommand)
    assert command.warnings == ()
    settings = command.settings
    assert settings.node.name == "vk-0"
    assert settings.node.provider == "mock"
    assert settings.node.internal_ip == "10.244.1.7"
    assert settings.node.taint == Taint("virtual-kubelet.io/provider", "mock", "NoSchedule")
    assert settings.kube.local_control_plane is False
    assert settings.server.listen_port == 10250
    assert settings.server.authentication_token_webhook is True
    # The provider config is mounted from the ConfigMap the kustomization generates, keyed by
    # the node name.
    (generator,) = documents("kustomization.yaml")[0]["configMapGenerator"]
    volume = next(v for v in pod["volumes"] if v["name"] == "provider-config")
    assert volume["configMap"]["name"] == generator["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "provider-config")
    assert settings.node.provider_config == Path(mount["mountPath"]) / "mock.json"
    files = dict(literal.split("=", 1) for literal in generator["literals"])
    assert "vk-0" in yaml.safe_load(files["mock.json"])
