"""ServiceAccounts on the test control plane, so that a process run here acts with exactly the
permissions a role gives: kubeconfigs that authenticate with a TokenRequest token (what a pod of
that account would use), and accounts bound to a given set of Roles and ClusterRoles."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.cluster import ControlPlane
from tests.support.waiting import eventually

Manifest = dict[str, Any]


def service_account_kubeconfig(
    plane: ControlPlane, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig for the plane that authenticates as `namespace/account` with a token from
    the TokenRequest API (`kubectl create token`): what a pod of that account would use."""
    token = plane.kubectl("create", "token", account, "-n", namespace, "--duration=2h").strip()
    admin = json.loads(plane.kubeconfig.read_text())
    user = f"system:serviceaccount:{namespace}:{account}"
    config = {
        **admin,
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "parley", "context": {"cluster": "parley", "user": user}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def bindings(roles: list[Manifest], namespace: str, account: str) -> list[Manifest]:
    """A binding of `namespace/account` to each role: a RoleBinding in a Role's namespace, a
    ClusterRoleBinding for a ClusterRole, named as the role."""
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    found = []
    for role in roles:
        kind = role["kind"]
        found.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": f"{kind}Binding",
                "metadata": dict(role["metadata"]),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": kind,
                    "name": role["metadata"]["name"],
                },
                "subjects": [subject],
            }
        )
    return found


@contextlib.contextmanager
def bound_service_account(
    plane: ControlPlane, namespace: str, account: str, roles: list[Manifest], kubeconfig: Path
) -> Iterator[Path]:
    """The ServiceAccount `namespace/account` bound to `roles` and nothing else, and a kubeconfig
    at `kubeconfig` that authenticates as it. Its cluster-wide objects go at the end."""
    plane.kubectl("create", "serviceaccount", account, "-n", namespace)
    objects = [*roles, *bindings(roles, namespace, account)]
    plane.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    user = f"system:serviceaccount:{namespace}:{account}"
    for role in roles:
        if role["rules"]:
            what = f"{user} has {role['kind']}/{role['metadata']['name']}"
            eventually(functools.partial(_granted, plane, user, role), what)
    try:
        yield service_account_kubeconfig(plane, namespace, account, kubeconfig)
    finally:
        for found in objects:
            if "namespace" not in found["metadata"]:
                plane.kubectl(
                    "delete", found["kind"], found["metadata"]["name"], "--ignore-not-found"
                )


def _granted(plane: ControlPlane, user: str, role: Manifest) -> bool:
    """Whether the apiserver's authorizer grants `user` the first verb of `role`'s first rule
    yet: it learns of bindings from a watch, a moment after they are created."""
    rule = role["rules"][0]
    group = rule["apiGroups"][0]
    resource, _, subresource = rule["resources"][0].partition("/")
    namespace = role["metadata"].get("namespace")
    query = [
        rule["verbs"][0],
        f"{resource}.{group}" if group else resource,
        *([f"--subresource={subresource}"] if subresource else []),
        *(["-n", namespace] if namespace else ["--all-namespaces"]),
        f"--as={user}",
    ]
    try:
        return plane.kubectl("auth", "can-i", *query).strip() == "yes"
    except RuntimeError:  # kubectl says "no" and exits 1
        return False
