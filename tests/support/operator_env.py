"""A namespace on the test control plane ready for the operator: the CRD installed and
established, the namespace created, an operator identity there (the ServiceAccount
`parley-operator`, bound to exactly the roles that `operator/parley_operator/rbac.py` generates),
and `KUBECONFIG` (plus any other variables the operator reads) pointing at the plane as that
account until the context ends. The operator, in this process or as a child, therefore has the
generated RBAC and nothing else; the test's own calls (`plane.kubectl`, clients given
`plane.kubeconfig`) stay admin.

`rbac` picks the mode: `"namespaced"` (a Role in the namespace, a ClusterRole of the
cluster-scoped reads: what `parley operator rbac --namespace NS` prints) or `"cluster"` (one
ClusterRole: `parley operator rbac`). `roles` replaces the generated roles (tests/test_rbac.py
takes a rule away)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from parley_operator.rbac import operator_roles
from tests.support.cluster import ControlPlane
from tests.support.service_accounts import bound_service_account

CRD = Path(__file__).resolve().parents[2] / "crds" / "voicedeployment.yaml"
ACCOUNT = "parley-operator"

RbacMode = Literal["namespaced", "cluster"]


def generated_roles(namespace: str, rbac: RbacMode) -> list[dict[str, Any]]:
    """The roles of an operator serving `namespace`, from the RBAC source, named after the
    namespace (the ClusterRoles of several test modules live side by side on one plane)."""
    served = [namespace] if rbac == "namespaced" else []
    return operator_roles(served, name=f"parley-operator-{namespace}")


@contextlib.contextmanager
def operator_namespace(
    plane: ControlPlane,
    namespace: str,
    *,
    rbac: RbacMode = "namespaced",
    roles: list[dict[str, Any]] | None = None,
    **environment: str,
) -> Iterator[ControlPlane]:
    plane.kubectl("apply", "--server-side", "-f", str(CRD))
    plane.kubectl(
        "wait", "--for=condition=Established", "crd/voicedeployments.parley.dev", "--timeout=30s"
    )
    plane.kubectl("create", "namespace", namespace)
    granted = generated_roles(namespace, rbac) if roles is None else roles
    kubeconfig = plane.workdir / "operators" / f"{namespace}.kubeconfig"
    with bound_service_account(plane, namespace, ACCOUNT, granted, kubeconfig):
        environment = {"KUBECONFIG": str(kubeconfig), **environment}
        saved = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)
        try:
            yield plane
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
