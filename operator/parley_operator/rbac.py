"""What Parley's service accounts may do, written down once: the operator's ClusterRole and the
one of the CRD upgrade hook (`parley operator crd --apply`). `parley operator rbac` prints both;
the Helm chart renders its ClusterRoles from that output (`charts/parley/files/rbac.yaml`,
kept equal to it by `tests/test_chart.py`)."""

from __future__ import annotations

from typing import Any

import yaml

from parley_operator.api import GROUP, PLURAL

OPERATOR_ROLE = "parley-operator"
CRD_APPLY_ROLE = "parley-crd-apply"
CRD_NAME = f"{PLURAL}.{GROUP}"

RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["services"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    # Soak tests: their Jobs, and the finished pod's termination message (the result).
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create"]},
    # Pods: the soak's (listed) and the runtime's (watched by the autoscaler, which patches its
    # drain mark and pod-deletion-cost annotations on them).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # kopf: peering and CRD discovery.
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings", "kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
]

#: `parley operator crd --apply`: update the VoiceDeployment CRD and nothing else. No `create`
#: (it cannot be limited to one name): Helm creates the CRD from the chart's crds/ on install.
CRD_APPLY_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "resourceNames": [CRD_NAME],
        "verbs": ["get", "patch"],
    },
]


def cluster_role(name: str = OPERATOR_ROLE, rules: list[dict[str, Any]] = RULES) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def cluster_roles() -> list[dict[str, Any]]:
    return [cluster_role(OPERATOR_ROLE, RULES), cluster_role(CRD_APPLY_ROLE, CRD_APPLY_RULES)]


def cluster_roles_yaml() -> str:
    """Both ClusterRoles as one `v1/List` (what `kubectl apply -f` and the chart read)."""
    header = (
        "# Generated from operator/parley_operator/rbac.py (`parley operator rbac`); do not edit.\n"
    )
    listing = {"apiVersion": "v1", "kind": "List", "items": cluster_roles()}
    return header + yaml.safe_dump(listing, sort_keys=False)
