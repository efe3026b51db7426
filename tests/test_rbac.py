"""The operator's RBAC (operator/parley_operator/rbac.py), the one source of its permissions.

`parley operator rbac` prints cluster mode (one ClusterRole), `--namespace NS` namespaced mode (a
Role per namespace, a ClusterRole of the cluster-scoped reads only); the apiserver agrees which
resources are namespaced and which are not. The operator tests run as a ServiceAccount bound to
exactly these roles (tests/support/operator_env.py). Here the operator, as such an account, makes
the CPU example Ready in either mode with no permission error logged and its Events posted, and
serves as a kopf peer in namespaced mode; given the roles less one rule it fails as it should:
without `services` the runtime's Service is refused (Degraded, with the apiserver's `forbidden`),
without `nodes` (cluster-scoped) it reconciles nothing at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from parley_operator.rbac import (
    CLUSTER_PEERING_RULES,
    CLUSTER_SCOPED_RULES,
    CRD_APPLY_RULES,
    NAMESPACED_RULES,
    RULES,
)
from tests.support.cluster import REPO, ControlPlane
from tests.support.operator_env import RbacMode, generated_roles, operator_namespace
from tests.support.waiting import eventually

Manifest = dict[str, Any]
PARLEY = Path(sys.executable).parent / "parley"
PEERING_CRDS = REPO / "charts" / "parley" / "crds" / "kopf-peering.yaml"


def parley_rbac(*args: str) -> list[Manifest]:
    out = subprocess.run(
        [str(PARLEY), "operator", "rbac", *args], capture_output=True, text=True, check=True
    ).stdout
    items: list[Manifest] = yaml.safe_load(out)["items"]
    return items


def test_cluster_mode_is_one_cluster_role_with_every_rule() -> None:
    items = parley_rbac()
    assert [(i["kind"], i["metadata"]["name"]) for i in items] == [
        ("ClusterRole", "parley-operator"),
        ("ClusterRole", "parley-crd-apply"),
    ]
    assert items[0]["rules"] == RULES
    assert items[1]["rules"] == CRD_APPLY_RULES


def test_namespaced_mode_is_a_role_per_namespace_and_the_cluster_scoped_reads() -> None:
    items = parley_rbac("--namespace", "voice", "--namespace", "support")
    assert [(i["kind"], i["metadata"]["name"], i["metadata"].get("namespace")) for i in items] == [
        ("ClusterRole", "parley-operator", None),
        ("Role", "parley-operator", "voice"),
        ("Role", "parley-operator", "support"),
        ("ClusterRole", "parley-crd-apply", None),
    ]
    assert items[0]["rules"] == CLUSTER_SCOPED_RULES
    assert items[1]["rules"] == items[2]["rules"] == NAMESPACED_RULES
    # What namespaced mode leaves out is only cluster-wide peering.
    granted = {json.dumps(r, sort_keys=True) for r in [*CLUSTER_SCOPED_RULES, *NAMESPACED_RULES]}
    extra = [r for r in RULES if json.dumps(r, sort_keys=True) not in granted]
    assert [r["resources"] for r in extra] == [["clusterkopfpeerings"]]


# -- on the control plane ---------------------------------------------------------------------


def resources(plane: ControlPlane, namespaced: bool) -> set[str]:
    """`resource.group` of every resource the apiserver serves, namespaced or cluster-scoped."""
    out = plane.kubectl("api-resources", f"--namespaced={str(namespaced).lower()}", "-o", "name")
    return set(out.split())


def named(rule: Manifest) -> set[str]:
    return {
        f"{resource.partition('/')[0]}.{group}" if group else resource.partition("/")[0]
        for resource in rule["resources"]
        for group in rule["apiGroups"]
    }


@pytest.mark.k8s
def test_the_apiserver_agrees_which_rules_are_namespaced(control_plane: ControlPlane) -> None:
    """A Role's rule on a cluster-scoped resource would grant nothing (and the reverse would
    grant the whole cluster): each rule sits in the mode's right role."""
    control_plane.kubectl("apply", "--server-side", "-f", str(PEERING_CRDS))
    control_plane.kubectl(
        "apply", "--server-side", "-f", str(REPO / "crds" / "voicedeployment.yaml")
    )
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    namespaced, cluster = resources(control_plane, True), resources(control_plane, False)
    for rule in NAMESPACED_RULES:
        assert named(rule) <= namespaced, rule
    for rule in [*CLUSTER_SCOPED_RULES, *CLUSTER_PEERING_RULES]:
        assert named(rule) <= cluster, rule


class Log(logging.Handler):
    """kopf's log lines while the operator runs (in this process)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def mentioning(self, *words: str) -> list[str]:
        return [line for line in self.lines if all(w in line.lower() for w in words)]


@contextlib.contextmanager
def operator(namespace: str, *options: str) -> Iterator[Log]:
    """The operator serving `namespace` (in this process, as `$KUBECONFIG`'s account)."""
    log, kopf_log = Log(), logging.getLogger("kopf")
    kopf_log.addHandler(log)
    args = ["run", "--namespace", namespace, *options, "-m", "parley_operator.handlers"]
    try:
        with KopfRunner(args, timeout=60):
            yield log
    finally:
        kopf_log.removeHandler(log)


def without(roles: list[Manifest], resource: str) -> list[Manifest]:
    """The roles less every rule on `resource`."""
    return [
        {**role, "rules": [r for r in role["rules"] if resource not in r["resources"]]}
        for role in roles
    ]


def get(plane: ControlPlane, namespace: str, kind: str, name: str) -> Manifest | None:
    try:
        found: Manifest = json.loads(
            plane.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        )
    except RuntimeError:
        return None
    return found


def condition(vd: Manifest | None, kind: str) -> Manifest:
    conditions = ((vd or {}).get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def status_of(plane: ControlPlane, namespace: str, kind: str) -> Callable[[], Manifest | None]:
    """The VoiceDeployment's condition `kind` once it is True."""

    def check() -> Manifest | None:
        found = condition(get(plane, namespace, "vd", "cpu-agent"), kind)
        return found if found.get("status") == "True" else None

    return check


def children(plane: ControlPlane, namespace: str) -> list[str]:
    return plane.kubectl("get", "deployments,services,pdb", "-n", namespace, "-o", "name").split()


def reasons(plane: ControlPlane, namespace: str) -> set[str]:
    """The reasons of the VoiceDeployment's Events."""
    events = json.loads(
        plane.kubectl(
            "get", "events", "-n", namespace,
            "--field-selector=involvedObject.name=cpu-agent", "-o", "json",
        )
    )["items"]  # fmt: skip
    return {e["reason"] for e in events}


def apply_example(plane: ControlPlane, namespace: str) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "cpu.yaml"))


@pytest.mark.k8s
@pytest.mark.parametrize("mode", ["namespaced", "cluster"])
def test_the_generated_roles_are_enough(control_plane: ControlPlane, mode: RbacMode) -> None:
    namespace = f"rbac-full-{mode}"
    with operator_namespace(control_plane, namespace, rbac=mode) as plane:
        with operator(namespace, "--standalone") as log:
            apply_example(plane, namespace)
            eventually(status_of(plane, namespace, "Ready"), "cpu-agent Ready")
            eventually(lambda: "RolloutComplete" in reasons(plane, namespace), "an Event posted")
            plane.kubectl("delete", "vd", "cpu-agent", "-n", namespace, "--wait=true")
        assert not log.mentioning("forbidden"), log.mentioning("forbidden")
        assert not log.mentioning("permission"), log.mentioning("permission")
        assert not log.mentioning("failed to post"), log.mentioning("failed to post")


@pytest.mark.k8s
def test_namespaced_mode_is_enough_for_kopf_peering(control_plane: ControlPlane) -> None:
    """`--peering` with watched namespaces: kopf meets its peers in a KopfPeering there."""
    namespace = "rbac-peering"
    control_plane.kubectl("apply", "--server-side", "-f", str(PEERING_CRDS))
    with operator_namespace(control_plane, namespace) as plane:
        peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "p"}}
        plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(peering))
        with operator(namespace, "--peering", "p") as log:
            apply_example(plane, namespace)
            eventually(status_of(plane, namespace, "Ready"), "cpu-agent Ready")
            status = json.loads(
                plane.kubectl("get", "kopfpeering", "p", "-n", namespace, "-o", "json")
            ).get("status")
            assert status, "the operator never announced itself in the KopfPeering"
            plane.kubectl("delete", "vd", "cpu-agent", "-n", namespace, "--wait=true")
        assert not log.mentioning("forbidden"), log.mentioning("forbidden")


@pytest.mark.k8s
def test_without_services_the_runtime_service_is_refused(control_plane: ControlPlane) -> None:
    namespace = "rbac-no-services"
    roles = without(generated_roles(namespace, "namespaced"), "services")
    with (
        operator_namespace(control_plane, namespace, roles=roles) as plane,
        operator(namespace, "--standalone"),
    ):
        apply_example(plane, namespace)
        degraded = eventually(status_of(plane, namespace, "Degraded"), "cpu-agent Degraded")
        assert not [c for c in children(plane, namespace) if c.startswith("service/")]
        assert not status_of(plane, namespace, "Ready")()
        plane.kubectl("delete", "vd", "cpu-agent", "-n", namespace, "--wait=true")
    assert degraded is not None
    message = degraded["message"]
    assert "forbidden" in message and 'cannot patch resource "services"' in message, message


@pytest.mark.k8s
def test_without_nodes_nothing_is_reconciled(control_plane: ControlPlane) -> None:
    """The VRAM planner's node index is cluster-scoped: kopf waits for every index to be
    filled before any handler runs, so without `nodes` the operator never starts serving."""
    namespace = "rbac-no-nodes"
    roles = without(generated_roles(namespace, "namespaced"), "nodes")
    with operator_namespace(control_plane, namespace, roles=roles) as plane:
        apply_example(plane, namespace)
        with operator(namespace, "--standalone") as log:
            refused = 'nodes is forbidden: user "system:serviceaccount:rbac-no-nodes'
            eventually(lambda: len(log.mentioning(refused)) >= 3, "three refused node listings")
            time.sleep(1)
            vd = get(plane, namespace, "vd", "cpu-agent")
            assert vd is not None and "status" not in vd, vd
            assert children(plane, namespace) == []
        plane.kubectl("delete", "vd", "cpu-agent", "-n", namespace, "--wait=true")
