"""What Parley's service accounts may do, written down once: the operator's roles, in either of
its two modes, and the ClusterRole of the CRD upgrade hook (`parley operator crd --apply`).

- **Cluster mode** (the operator serves every namespace): one ClusterRole `parley-operator`.
- **Namespaced mode** (`parley operator run --namespace NS ...`): a Role `parley-operator` in
  each served namespace for the namespaced resources, and a ClusterRole `parley-operator` with
  only the cluster-scoped reads the operator needs wherever it runs.

`parley operator rbac [--namespace NS ...]` prints them; the Helm chart renders its roles from
that output (`charts/parley/files/rbac.yaml` and `rbac-namespaced.yaml`, kept equal to it by
`tests/test_chart.py`). `tests/support/operator_env.py` runs the operator tests with exactly
these roles, and `tests/test_rbac.py` shows that a rule taken away breaks the operator."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import yaml

from parley_operator.api import GROUP, PLURAL

OPERATOR_ROLE = "parley-operator"
CRD_APPLY_ROLE = "parley-crd-apply"
CRD_NAME = f"{PLURAL}.{GROUP}"
RBAC_API = "rbac.authorization.k8s.io/v1"

Rule = dict[str, Any]
Manifest = dict[str, Any]

#: The verbs on the children the operator owns (it applies, lists, watches and prunes them).
OWNED = ("get", "list", "watch", "create", "patch", "delete")

#: What the operator does in each namespace it serves (a Role there in namespaced mode).
NAMESPACED_RULES: list[Rule] = [
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": [*OWNED]},
    {"apiGroups": [""], "resources": ["services"], "verbs": [*OWNED]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": [*OWNED]},
    # Soak tests: their Jobs, and the finished pod's termination message (the result).
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create"]},
    # Pods: the soak's (listed) and the runtime's (watched by the autoscaler, which patches its
    # drain mark and pod-deletion-cost annotations on them).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    # The runtime's admin token: its Secret, created once, read for drain calls.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
    # Events: kopf posts each one as a new core/v1 Event (it never patches or aggregates them).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # kopf peering (`--peering`) of an operator serving named namespaces: a KopfPeering in each.
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]

#: Cluster-scoped reads, needed in both modes.
CLUSTER_SCOPED_RULES: list[Rule] = [
    # The VRAM planner: the GPU memory that GPU Feature Discovery labels the nodes with.
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    # kopf: it watches the CRDs to notice its resources appear, change and go (without, it
    # retries, then serves only what existed when it started).
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    # kopf, serving named namespaces (`--namespace`): it lists and watches them. Without, it
    # retries the listing for about a minute before it starts serving (tests/test_rbac.py).
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
]

#: kopf peering (`--peering`) of an operator serving every namespace: a ClusterKopfPeering.
CLUSTER_PEERING_RULES: list[Rule] = [
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]

#: Cluster mode: everything, in every namespace.
RULES: list[Rule] = [*NAMESPACED_RULES, *CLUSTER_PEERING_RULES, *CLUSTER_SCOPED_RULES]

#: `parley operator crd --apply`: update the VoiceDeployment CRD and nothing else. No `create`
#: (it cannot be limited to one name): Helm creates the CRD from the chart's crds/ on install.
CRD_APPLY_RULES: list[Rule] = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "resourceNames": [CRD_NAME],
        "verbs": ["get", "patch"],
    },
]


def cluster_role(name: str, rules: list[Rule]) -> Manifest:
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": copy.deepcopy(rules),
    }


def role(name: str, namespace: str, rules: list[Rule]) -> Manifest:
    return {
        "apiVersion": RBAC_API,
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": copy.deepcopy(rules),
    }


def cluster_mode(name: str = OPERATOR_ROLE) -> list[Manifest]:
    """The operator's roles when it serves every namespace: one ClusterRole."""
    return [cluster_role(name, RULES)]


def namespaced_mode(namespaces: Sequence[str], name: str = OPERATOR_ROLE) -> list[Manifest]:
    """The operator's roles when it serves `namespaces` only: the ClusterRole of the
    cluster-scoped reads, then a Role in each namespace."""
    if not namespaces:
        raise ValueError("namespaced mode needs at least one namespace")
    return [
        cluster_role(name, CLUSTER_SCOPED_RULES),
        *(role(name, namespace, NAMESPACED_RULES) for namespace in namespaces),
    ]


def operator_roles(namespaces: Sequence[str] = (), name: str = OPERATOR_ROLE) -> list[Manifest]:
    """The operator's roles in the mode `parley operator run` has for these `--namespace`s."""
    return namespaced_mode(namespaces, name) if namespaces else cluster_mode(name)


def rbac_yaml(namespaces: Sequence[str] = ()) -> str:
    """The operator's roles and the CRD hook's ClusterRole as one `v1/List` (what `kubectl
    apply -f` and the chart read)."""
    header = (
        "# Generated from operator/parley_operator/rbac.py (`parley operator rbac"
        + "".join(f" --namespace {namespace}" for namespace in namespaces)
        + "`); do not edit.\n"
    )
    items = [*operator_roles(namespaces), cluster_role(CRD_APPLY_ROLE, CRD_APPLY_RULES)]
    listing = {"apiVersion": "v1", "kind": "List", "items": items}
    return header + yaml.safe_dump(listing, sort_keys=False)
