"""The operator's thin adapter to the Kubernetes API (the official client, blocking: the
handlers call it in worker threads): server-side apply under one field manager, listing and
deleting children, status patches. What the operator reads often (children, nodes, its own
resources) comes from kopf's in-memory indexes, not from here."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from parley_operator.api import GROUP, PLURAL, VERSION

FIELD_MANAGER = "parley-operator"
CHILD_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"))


class Kube:
    def __init__(self, connections: int = 10) -> None:
        """`connections`: HTTP connections kept to the apiserver (one per concurrent call)."""
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = connections
        self.api = client.ApiClient(configuration)
        self.dynamic = DynamicClient(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply `manifest`; the object as stored afterwards."""
        resource = self.dynamic.resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        applied = resource.server_side_apply(
            body=manifest,
            name=manifest["metadata"]["name"],
            namespace=manifest["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        result: dict[str, Any] = applied.to_dict()
        return result

    def children(self, namespace: str, selector: str) -> list[tuple[str, str, str]]:
        """(apiVersion, kind, name) of every child kind matching the label selector."""
        found = []
        for api_version, kind in CHILD_KINDS:
            resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
            for item in resource.get(namespace=namespace, label_selector=selector).items:
                found.append((api_version, kind, item.metadata.name))
        return found

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        try:
            resource.delete(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )
