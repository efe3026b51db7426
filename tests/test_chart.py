"""The Helm chart (charts/parley).

Without a cluster: `helm lint --strict`; the chart's CRDs are the repository's; its RBAC is
`operator/parley_operator/rbac.py`'s; values.yaml and values.schema.json name the same keys, the
schema refuses unknown ones and every key is commented; what it renders fits what the operator
renders (ports, labels) and reads (metrics port, images, peering).

On the real control plane (`k8s`): the rendered chart, with defaults and with everything on,
passes a server-side dry run; `helm install` (the commands of docs/helm.md), then the operator
run here under the chart's ServiceAccount (a TokenRequest token, so its RBAC is all it has)
makes the CPU example Ready; `helm upgrade` puts a changed CRD right through the pre-upgrade
hook (its pod is fake, so its command runs here, as the hook's ServiceAccount, before the test
lets the fake node finish the pod); `helm uninstall` leaves nothing but the CRDs.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kopf._cogs.structs import references

from parley_operator import metrics
from parley_operator.api import DEFAULT_IMAGES, VoiceDeployment
from parley_operator.rbac import (
    CLUSTER_SCOPED_RULES,
    CRD_APPLY_RULES,
    NAMESPACED_RULES,
    RULES,
    rbac_yaml,
)
from parley_operator.render import render
from parley_operator.vram import plan_vram
from tests.support.cluster import REPO, ControlPlane
from tests.support.helm import (
    ALL_FEATURES,
    CHART,
    helm,
    helm_bin,
    local_command,
    prometheus_operator_crds,
    template,
)
from tests.support.runtime_host import free_port
from tests.support.service_accounts import service_account_kubeconfig
from tests.support.waiting import eventually

Manifest = dict[str, Any]

RELEASE, NAMESPACE, APPS = "parley", "parley-system", "voice"
CRD = REPO / "crds" / "voicedeployment.yaml"
CRD_NAME = "voicedeployments.parley.dev"
PEERING_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
#: The commands of docs/helm.md, run as written (kubectl gets the plane's kubeconfig).
INSTALL = ("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace", "--wait")
UPGRADE = (
    "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE,
    "--set", "crds.upgradeHook.enabled=true", "--wait",
)  # fmt: skip
UNINSTALL = ("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")


def find(docs: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    (found,) = find(docs, kind, name)
    return found


def operator_container(docs: list[Manifest]) -> Manifest:
    deployment = one(docs, "Deployment", "parley-operator")
    container: Manifest = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector's verdict on `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for term in selector.get("matchExpressions", []):
        value, op = labels.get(term["key"]), term["operator"]
        if (
            (op == "In" and value not in term["values"])
            or (op == "NotIn" and value in term["values"])
            or (op == "Exists" and value is None)
            or (op == "DoesNotExist" and value is not None)
        ):
            return False
    return True


# -- lint, sources of truth -------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_FEATURES)]], ids=["defaults", "all-on"])
def test_helm_lint_strict_is_clean(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_the_chart_has_no_subcharts() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert "dependencies" not in chart and not (CHART / "charts").exists()


def test_the_charts_crds_are_the_repositorys_plus_kopfs_peering() -> None:
    """Byte for byte: `crds/` is the one source (`parley operator crd`). The chart adds kopf's
    peering CRDs, which kopf needs with more than one operator replica."""
    repo = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert repo, "no CRDs in crds/"
    for name, content in repo.items():
        assert chart.get(name) == content, f"charts/parley/crds/{name} differs from crds/{name}"
    assert set(chart) - set(repo) == {"kopf-peering.yaml"}
    peering = list(yaml.safe_load_all(chart["kopf-peering.yaml"]))
    kopf_selectors = (references.CLUSTER_PEERINGS_K, references.NAMESPACED_PEERINGS_K)
    assert {f"{d['spec']['names']['plural']}.{d['spec']['group']}" for d in peering} == {
        f"{s.any_name}.{s.group}" for s in kopf_selectors
    }
    assert {d["spec"]["versions"][0]["name"] for d in peering} == {
        s.version for s in kopf_selectors
    }


def test_the_charts_rbac_is_the_operators_rbac_source() -> None:
    """files/rbac.yaml is `parley operator rbac`, files/rbac-namespaced.yaml `parley operator
    rbac --namespace voice`, and the roles rendered from them carry exactly the rules of
    operator/parley_operator/rbac.py: one ClusterRole serving every namespace by default."""
    files = {
        "rbac.yaml": (rbac_yaml(), "parley operator rbac"),
        "rbac-namespaced.yaml": (rbac_yaml(["voice"]), "parley operator rbac --namespace voice"),
    }
    for name, (generated, command) in files.items():
        assert (CHART / "files" / name).read_text() == generated, (
            f"stale: run `{command} > charts/parley/files/{name}`"
        )
    docs = template("--set", "crds.upgradeHook.enabled=true")
    assert one(docs, "ClusterRole", "parley-operator")["rules"] == RULES
    assert one(docs, "ClusterRole", "parley-crd-apply")["rules"] == CRD_APPLY_RULES
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    binding = one(docs, "ClusterRoleBinding", "parley-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "parley-operator", "namespace": NAMESPACE}
    ]
    deployment = one(docs, "Deployment", "parley-operator")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "parley-operator"


def test_watched_namespaces_get_roles_and_the_cluster_only_its_reads() -> None:
    """With operator.watchNamespaces, the namespaced mode of rbac.py: a Role and RoleBinding in
    each watched namespace, and a ClusterRole of the cluster-scoped reads only."""
    docs = template("--set", "operator.watchNamespaces={voice,support}")
    subjects = [{"kind": "ServiceAccount", "name": "parley-operator", "namespace": NAMESPACE}]
    assert one(docs, "ClusterRole", "parley-operator")["rules"] == CLUSTER_SCOPED_RULES
    assert one(docs, "ClusterRoleBinding", "parley-operator")["subjects"] == subjects
    roles, role_bindings = find(docs, "Role"), find(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["support", "voice"]
    assert all(r["metadata"]["name"] == "parley-operator" for r in roles)
    assert all(r["rules"] == NAMESPACED_RULES for r in roles)
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["support", "voice"]
    for binding in role_bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "parley-operator",
        }
        assert binding["subjects"] == subjects
    args = operator_container(docs)["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--namespace"] == ["voice", "support"]


# -- values and schema ------------------------------------------------------------------------

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def chart_keys(node: Manifest) -> dict[str, Manifest] | None:
    """The keys the schema defines at `node` as the chart's own structure: the `properties`
    written in place. A map (labels, resource quantities), a list, or a Kubernetes type by
    `$ref` (affinity, NetworkPolicyPeer, EnvVar) holds the user's data: None."""
    properties: dict[str, Manifest] | None = node.get("properties")
    return None if "$ref" in node else properties


def key_mismatches(values: Any, node: Manifest, path: str) -> Iterator[str]:
    """Where values.yaml and the schema disagree on the chart's keys, both ways."""
    properties = chart_keys(node)
    if properties is None:
        return
    if not isinstance(values, dict):
        yield f"{path}: an object in the schema, {values!r} in values.yaml"
        return
    for key in sorted(values.keys() - properties.keys()):
        yield f"{path}.{key}: in values.yaml, not in the schema"
    for key in sorted(properties.keys() - values.keys()):
        yield f"{path}.{key}: in the schema, not in values.yaml"
    for key in sorted(values.keys() & properties.keys()):
        yield from key_mismatches(values[key], properties[key], f"{path}.{key}")


def test_values_and_schema_name_the_same_keys() -> None:
    assert list(key_mismatches(VALUES, SCHEMA, "")) == []


def test_the_schema_is_strict_everywhere() -> None:
    """Every object in the schema closes its keys: `additionalProperties: false` where it lists
    them, a typed schema for the entries of a map."""

    def loose(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") == "object":
                extra = node.get("additionalProperties")
                if "properties" in node and extra is not False:
                    yield f"{path}: lists properties without additionalProperties: false"
                if "properties" not in node and not isinstance(extra, dict):
                    yield f"{path}: a map without a schema for its entries"
            for key, child in node.items():
                yield from loose(child, f"{path}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                yield from loose(child, f"{path}/{i}")

    assert list(loose(SCHEMA, "#")) == []


def test_every_key_of_values_yaml_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    root = yaml.compose((CHART / "values.yaml").read_text())

    def uncommented(node: yaml.Node, schema: Manifest, path: str) -> Iterator[str]:
        properties = chart_keys(schema)
        if properties is None or not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            line = key.start_mark.line
            if not lines[line - 1].lstrip().startswith("#"):
                yield f"{path}.{key.value} (line {line + 1})"
            yield from uncommented(value, properties[key.value], f"{path}.{key.value}")

    assert list(uncommented(root, SCHEMA, "")) == []


@pytest.mark.parametrize(
    "setting",
    [
        "replicas=2",
        "operator.replica=2",
        "images.operator.tags=1.0",
        "monitoring.podMonitor.enable=true",
        "crds.upgradeHook.resources.request.cpu=1",
        "networkPolicy.signallingFrom[0].podSelecter.matchLabels.app=ingress",
        "operator.tolerations[0].efect=NoSchedule",
    ],
)
def test_the_schema_refuses_unknown_keys(setting: str) -> None:
    result = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", setting, check=False
    )
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert "additional properties" in result.stderr and "not allowed" in result.stderr, (
        result.stderr
    )


def test_the_schema_accepts_the_keys_it_lists() -> None:
    template("--set", "operator.replicas=2", "--set", "images.operator.tag=1.0")
    template("-f", str(ALL_FEATURES))


# -- what it renders --------------------------------------------------------------------------


def test_by_default_one_standalone_operator_with_probes_on_kopfs_health_endpoint() -> None:
    docs = template()
    deployment = one(docs, "Deployment", "parley-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container(docs)
    assert container["command"] == ["parley"]
    args = container["args"]
    assert args[:2] == ["operator", "run"] and "--peering" not in args and "--namespace" not in args
    liveness = args[args.index("--liveness") + 1]
    assert liveness == "http://0.0.0.0:8080/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": metrics.DEFAULT_PORT}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = env_of(container)
    assert env["PARLEY_OPERATOR_METRICS_PORT"] == str(metrics.DEFAULT_PORT)
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The chart's default images are the operator's defaults (the chart's appVersion).
    assert env["PARLEY_OPERATOR_RUNTIME_IMAGE"] == DEFAULT_IMAGES["runtime"]
    assert env["PARLEY_OPERATOR_TTS_IMAGE"] == DEFAULT_IMAGES["tts"]
    assert container["image"] == "ghcr.io/parley-voice/parley-operator:0.1.0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = one(docs, "Service", "parley-operator-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    kinds = {d["kind"] for d in docs}
    assert kinds == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"
    }  # fmt: skip


def test_more_replicas_run_as_kopf_peers() -> None:
    docs = template("--set", "operator.replicas=3")
    deployment = one(docs, "Deployment", "parley-operator")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = operator_container(docs)["args"]
    assert args[args.index("--peering") + 1] == "parley"
    assert one(docs, "ClusterKopfPeering", "parley")["apiVersion"] == "kopf.dev/v1"

    docs = template("--set", "operator.replicas=2", "--set", "operator.watchNamespaces={a,b}")
    args = operator_container(docs)["args"]
    assert args[args.index("--namespace") :] == ["--namespace", "a", "--namespace", "b"]
    assert {p["metadata"]["namespace"] for p in find(docs, "KopfPeering", "parley")} == {"a", "b"}
    assert find(docs, "ClusterKopfPeering") == []


def test_images_by_tag_or_digest_and_pull_secrets() -> None:
    docs = template("-f", str(ALL_FEATURES))
    features = yaml.safe_load(ALL_FEATURES.read_text())
    container = operator_container(docs)
    digest = features["images"]["operator"]["digest"]
    assert container["image"] == f"ghcr.io/parley-voice/parley-operator@{digest}"
    env = env_of(container)
    assert env["PARLEY_OPERATOR_RUNTIME_IMAGE"] == "ghcr.io/parley-voice/parley-runtime:0.1.0-cpu"
    assert env["PARLEY_OPERATOR_TTS_IMAGE"] == (
        f"ghcr.io/parley-voice/parley-tts@{features['images']['tts']['digest']}"
    )
    for kind, name in (("Deployment", "parley-operator"), ("Job", "parley-crd-apply")):
        spec = one(docs, kind, name)["spec"]["template"]["spec"]
        assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}]
        assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert spec["tolerations"][0]["key"] == "dedicated"
        assert "podAntiAffinity" in spec["affinity"]


def test_the_upgrade_hook_applies_the_crd_from_the_operator_image() -> None:
    assert find(template(), "Job") == []
    docs = template("--set", "crds.upgradeHook.enabled=true")
    job = one(docs, "Job", "parley-crd-apply")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["parley", "operator", "crd", "--apply"]
    assert container["image"] == operator_container(docs)["image"]
    assert pod["serviceAccountName"] == "parley-crd-apply"
    hooks = [
        d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})
    ]  # fmt: skip
    assert {(d["kind"], d["metadata"]["name"]) for d in hooks} == {
        ("ServiceAccount", "parley-crd-apply"),
        ("ClusterRole", "parley-crd-apply"),
        ("ClusterRoleBinding", "parley-crd-apply"),
        ("Job", "parley-crd-apply"),
    }
    weight = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hooks}
    assert weight["ServiceAccount"] < weight["ClusterRoleBinding"] < weight["Job"]
    assert weight["ClusterRole"] < weight["ClusterRoleBinding"]
    for hook in hooks:
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"


def operator_pods(example: str, namespace: str) -> dict[str, Manifest]:
    """The pod templates the operator renders for an example, by component."""
    manifest = yaml.safe_load((REPO / "examples" / example).read_text())
    manifest["metadata"] |= {"namespace": namespace, "uid": "00000000-0000-4000-8000-000000000001"}
    vd = VoiceDeployment.model_validate(manifest)
    children = render(vd, plan_vram(vd.spec))
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]
        for d in children
        if d["kind"] == "Deployment"
    }


def test_network_policies_fit_the_pods_the_operator_renders() -> None:
    docs = template("-f", str(ALL_FEATURES))
    features = yaml.safe_load(ALL_FEATURES.read_text())["networkPolicy"]
    policies = find(docs, "NetworkPolicy")
    operator_labels = one(docs, "Deployment", "parley-operator")["spec"]["template"]["metadata"]
    for namespace in features["namespaces"]:
        pods = operator_pods("gpu-exclusive.yaml", namespace)
        assert set(pods) == {"runtime", "llm", "tts"}
        here = [p for p in policies if p["metadata"]["namespace"] == namespace]
        for component, pod in pods.items():
            (policy,) = [
                p for p in here if selects(p["spec"]["podSelector"], pod["metadata"]["labels"])
            ]
            port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
            tcp = {
                p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]
                if p["protocol"] == "TCP"
            }  # fmt: skip
            assert tcp == {port}, component
        runtime = next(p for p in here if p["metadata"]["name"] == "parley-runtime")
        rules = runtime["spec"]["ingress"]
        operator_peer = rules[0]["from"][0]
        assert operator_peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": NAMESPACE
        }
        assert selects(operator_peer["podSelector"], operator_labels["labels"])
        assert rules[1]["from"] == features["signallingFrom"]
        assert rules[2] == {"ports": [{"protocol": "UDP"}], "from": features["mediaFrom"]}
        servers = next(p for p in here if p["metadata"]["name"] == "parley-servers")
        runtime_peer = servers["spec"]["ingress"][0]["from"][0]
        assert selects(runtime_peer["podSelector"], pods["runtime"]["metadata"]["labels"])
        assert not selects(runtime_peer["podSelector"], pods["tts"]["metadata"]["labels"])
    # Without signallingFrom and mediaFrom, those two rules admit anyone.
    docs = template("--set", "networkPolicy.enabled=true")
    runtime = one(docs, "NetworkPolicy", "parley-runtime")
    assert [set(rule) for rule in runtime["spec"]["ingress"]] == [
        {"from", "ports"},
        {"ports"},
        {"ports"},
    ]


def test_the_pod_monitor_scrapes_every_pod_the_operator_renders() -> None:
    docs = template("-f", str(ALL_FEATURES))
    monitor = one(docs, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for component, pod in operator_pods("gpu-exclusive.yaml", APPS).items():
        labels = pod["metadata"]["labels"]
        assert selects(monitor["spec"]["selector"], labels), component
        assert endpoint["port"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        for relabel in endpoint["relabelings"]:
            (source,) = relabel["sourceLabels"]
            sanitized = {
                "__meta_kubernetes_pod_label_"
                + k.replace(".", "_").replace("/", "_").replace("-", "_")
                for k in labels
            }
            assert source in sanitized
    namespaces = yaml.safe_load(ALL_FEATURES.read_text())["monitoring"]["podMonitor"]["namespaces"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": namespaces}
    assert one(template("--set", "monitoring.podMonitor.enabled=true"), "PodMonitor")["spec"][
        "namespaceSelector"
    ] == {"any": True}
    service_monitor = one(docs, "ServiceMonitor")
    operator_labels = one(docs, "Service", "parley-operator-metrics")["metadata"]["labels"]
    assert selects(service_monitor["spec"]["selector"], operator_labels)
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True


def test_dashboards_and_alerts_are_wrapped_as_they_are() -> None:
    docs = template("-f", str(ALL_FEATURES))
    dashboards = sorted((CHART / "dashboards").glob("*.json"))
    config_maps = {next(iter(c["data"])): c for c in find(docs, "ConfigMap")}
    assert sorted(config_maps) == [path.name for path in dashboards]
    for path in dashboards:
        config_map = config_maps[path.name]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Parley"}
        assert config_map["data"] == {path.name: path.read_text().rstrip("\n")}
        assert len(json.dumps(config_map)) < 256 * 1024
    alerts = CHART / "files" / "alerts.yaml"
    rules = find(docs, "PrometheusRule")
    if alerts.exists():
        assert [r["spec"] for r in rules] == [yaml.safe_load(alerts.read_text())]
    else:
        assert rules == []
    release_label = {"release": "kube-prometheus-stack"}
    for doc in [
        *config_maps.values(),
        *rules,
        *find(docs, "ServiceMonitor"),
        *find(docs, "PodMonitor"),
    ]:
        assert release_label.items() <= doc["metadata"]["labels"].items(), doc["kind"]
    for policy in find(docs, "NetworkPolicy"):
        assert policy["metadata"]["labels"]["example.com/policy"] == "voice"


# -- on the control plane ---------------------------------------------------------------------


def ensure_namespace(plane: ControlPlane, name: str) -> None:
    existing = plane.kubectl("get", "namespaces", "-o", "name").split()
    if f"namespace/{name}" not in existing:
        plane.kubectl("create", "namespace", name)


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    """The plane with the CRDs that the chart's objects are instances of: the chart's own, and
    prometheus-operator's (pinned, cached), and the namespaces the all-on values name."""
    crds = [f"--filename={path}" for path in prometheus_operator_crds()]
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", *crds)
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    features = yaml.safe_load(ALL_FEATURES.read_text())
    for namespace in {NAMESPACE, *features["networkPolicy"]["namespaces"]}:
        ensure_namespace(control_plane, namespace)
    return control_plane


@pytest.mark.k8s
@pytest.mark.parametrize("values", [[], ["-f", str(ALL_FEATURES)]], ids=["defaults", "all-on"])
def test_the_rendered_chart_passes_a_server_side_dry_run(
    cluster: ControlPlane, values: list[str]
) -> None:
    rendered = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds", *values
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    out = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-",
        input=rendered,
    )  # fmt: skip
    lines = out.splitlines()
    assert len(lines) == len(documents), out
    assert all(line.endswith("serverside-applied (server dry run)") for line in lines), out


def release_objects(plane: ControlPlane) -> list[str]:
    """Every object of the release still in the cluster: anything labelled as this release's by
    Helm, and Helm's own release records."""
    kinds = [
        kind
        for kind in plane.kubectl("api-resources", "--verbs=list", "-o", "name").split()
        if kind not in ("events", "events.events.k8s.io", "componentstatuses")
    ]
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/managed-by=Helm"
    found = json.loads(
        plane.kubectl("get", ",".join(kinds), "--all-namespaces", "-l", selector, "-o", "json")
    )["items"]
    records = json.loads(
        plane.kubectl(
            "get", "secrets", "-n", NAMESPACE, "-l", f"owner=helm,name={RELEASE}", "-o", "json"
        )
    )["items"]
    return [
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        for o in [*found, *records]
    ]


@pytest.fixture(scope="module")
def release(cluster: ControlPlane) -> Iterator[ControlPlane]:
    """`helm install` as docs/helm.md says, in a cluster without Parley's CRDs (so they come
    from the chart)."""
    cluster.kubectl("delete", "crd", CRD_NAME, *PEERING_CRDS, "--ignore-not-found", "--wait=true")
    helm(*INSTALL, kubeconfig=cluster.kubeconfig)
    yield cluster
    helm(*UNINSTALL, kubeconfig=cluster.kubeconfig, check=False)


class OperatorProcess:
    """The chart's operator container, run here: its command, arguments and environment from
    the installed Deployment, its credentials those of the chart's ServiceAccount. Only the two
    ports move to free ones (this machine is shared)."""

    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        deployment = json.loads(
            plane.kubectl("get", "deployment", "parley-operator", "-n", NAMESPACE, "-o", "json")
        )
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        kubeconfig = service_account_kubeconfig(
            plane, NAMESPACE, pod["serviceAccountName"], workdir / "operator-kubeconfig"
        )
        self.health_port, self.metrics_port = free_port(), free_port()
        command = local_command(container)
        at = command.index("--liveness") + 1
        assert command[at] == "http://0.0.0.0:8080/healthz"
        command[at] = f"http://127.0.0.1:{self.health_port}/healthz"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        for variable in container["env"]:
            if "value" in variable:
                env[variable["name"]] = variable["value"]
            else:
                assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
                env[variable["name"]] = "parley-operator-0"
        assert env["PARLEY_OPERATOR_METRICS_PORT"] == "8081"
        env["PARLEY_OPERATOR_METRICS_PORT"] = str(self.metrics_port)
        self.log = workdir / "operator.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    def get(self, port: int, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
        except httpx.HTTPError:
            return None

    def healthy(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        response = self.get(self.health_port, "/healthz")
        return response is not None and response.status_code == 200

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def operator(
    release: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(release, tmp_path_factory.mktemp("chart-operator"))
    try:
        eventually(process.healthy, "the operator's /healthz answers 200")
        yield process
    finally:
        process.stop()


@pytest.mark.k8s
def test_install_then_the_cpu_example_becomes_ready_with_the_charts_rbac(
    release: ControlPlane, operator: OperatorProcess
) -> None:
    for crd in (CRD_NAME, *PEERING_CRDS):
        release.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    release.kubectl("create", "namespace", APPS)
    release.kubectl("apply", "-n", APPS, "-f", str(REPO / "examples" / "cpu.yaml"))
    try:
        release.kubectl(
            "wait", "-n", APPS, "--for=condition=Ready", "vd/cpu-agent", "--timeout=10m"
        )
    except (RuntimeError, subprocess.TimeoutExpired) as failed:
        status = release.kubectl("get", "-n", APPS, "vd/cpu-agent", "-o", "jsonpath={.status}")
        log = operator.log.read_text()[-3000:]
        raise AssertionError(f"cpu-agent not Ready: {status}\noperator log:\n{log}") from failed
    for kind in (
        "deployment/cpu-agent-runtime",
        "deployment/cpu-agent-tts",
        "pdb/cpu-agent-runtime",
    ):
        release.kubectl("get", "-n", APPS, kind)
    scraped = operator.get(operator.metrics_port, "/metrics")
    assert (
        scraped is not None and 'parley_operator_reconciles_total{kind="reconcile"}' in scraped.text
    )
    log = operator.log.read_text()
    assert "forbidden" not in log.lower(), log[-3000:]


@pytest.mark.k8s
def test_an_upgrade_applies_the_changed_crd_through_the_hook(
    release: ControlPlane, tmp_path: Path
) -> None:
    # The cluster's CRD as an older release left it: a printer column less, another description.
    stored = json.loads(release.kubectl("get", "crd", CRD_NAME, "-o", "json"))
    older = copy.deepcopy(stored)
    version = older["spec"]["versions"][0]
    dropped = version["additionalPrinterColumns"].pop()
    version["schema"]["openAPIV3Schema"]["description"] = "A VoiceDeployment of long ago."
    release.kubectl("replace", "-f", "-", input=json.dumps(older))

    # The hook's pod must wait for the test: no node takes new pods while the upgrade starts.
    nodes = release.kubectl("get", "nodes", "-o", "name").split()
    for node in nodes:
        release.kubectl("cordon", node)
    upgrade = subprocess.Popen(
        [str(helm_bin()), *UPGRADE, f"--kubeconfig={release.kubeconfig}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pod = eventually(lambda: pending_pod(release, "parley-crd-apply"), "the hook's pod")
        assert pod is not None
        spec = pod["spec"]
        kubeconfig = service_account_kubeconfig(
            release, NAMESPACE, spec["serviceAccountName"], tmp_path / "hook-kubeconfig"
        )
        ran = subprocess.run(
            local_command(spec["containers"][0]),
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stderr
        assert f"customresourcedefinition/{CRD_NAME} serverside-applied" in ran.stdout
        # The command succeeded: the pod may finish (kwok completes a Job's pod once it runs).
        bind(release, pod["metadata"]["name"], nodes[0].removeprefix("node/"))
        out, _ = upgrade.communicate(timeout=180)
        assert upgrade.returncode == 0, out
    finally:
        for node in nodes:
            release.kubectl("uncordon", node)
        if upgrade.poll() is None:
            upgrade.kill()
            upgrade.wait()

    applied = json.loads(
        release.kubectl("get", "crd", CRD_NAME, "-o", "json", "--show-managed-fields")
    )
    version = applied["spec"]["versions"][0]
    assert dropped in version["additionalPrinterColumns"]
    current = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]
    assert (
        version["schema"]["openAPIV3Schema"]["description"]
        == (current["schema"]["openAPIV3Schema"]["description"])
    )
    managers = {(m["manager"], m["operation"]) for m in applied["metadata"]["managedFields"]}
    assert ("parley", "Apply") in managers
    # The hook's objects went with its success.
    for kind in ("job", "serviceaccount", "clusterrole", "clusterrolebinding"):
        names = release.kubectl("get", kind, "-A", "-o", "name").split()
        assert f"{kind}.batch/parley-crd-apply" not in names
        assert not [n for n in names if n.endswith("/parley-crd-apply")], kind


def pending_pod(plane: ControlPlane, job: str) -> Manifest | None:
    pods = json.loads(
        plane.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"job-name={job}", "-o", "json")
    )["items"]
    pending = [p for p in pods if p["status"].get("phase") == "Pending"]
    return pending[0] if pending else None


def bind(plane: ControlPlane, pod: str, node: str) -> None:
    """What the scheduler would do: place the pod on `node` (a Binding)."""
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    plane.kubectl(
        "create", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/binding", "-f", "-",
        input=json.dumps(binding),
    )  # fmt: skip


@pytest.mark.k8s
def test_uninstall_leaves_nothing_but_the_crds(
    release: ControlPlane, operator: OperatorProcess
) -> None:
    assert release_objects(release), "the check finds nothing even before the uninstall"
    release.kubectl("delete", "voicedeployments", "--all", "--all-namespaces", "--wait=true")
    eventually(
        lambda: not release.kubectl(
            "get", "deployments", "-n", APPS, "-l", "parley.dev/voicedeployment=cpu-agent",
            "-o", "name",
        ),
        "the VoiceDeployment's workloads gone",
    )  # fmt: skip
    operator.stop()
    helm(*UNINSTALL, kubeconfig=release.kubeconfig)
    eventually(lambda: not release_objects(release), "no object of the release left", timeout=90)
    for crd in (CRD_NAME, *PEERING_CRDS):
        release.kubectl("get", "crd", crd)
    # Removing Parley altogether: the CRDs by hand.
    release.kubectl("delete", "crd", CRD_NAME, *PEERING_CRDS)
    left = [name.split("/")[1] for name in release.kubectl("get", "crd", "-o", "name").split()]
    assert not {CRD_NAME, *PEERING_CRDS} & set(left)
