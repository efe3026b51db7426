"""The operator's thin adapter to the Kubernetes API (the official client): server-side apply
under one field manager, reading children, nodes' GPU memory, status patches."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from parley_operator.api import GROUP, PLURAL, VERSION

FIELD_MANAGER = "parley-operator"
CHILD_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"))


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api = api_client or client.ApiClient()
        self.dynamic = DynamicClient(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def apply(self, manifest: dict[str, Any]) -> None:
        resource = self.dynamic.resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        resource.server_side_apply(
            body=manifest,
            name=manifest["metadata"]["name"],
            namespace=manifest["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )

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

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result: dict[str, Any] = self.api.sanitize_for_serialization(found)
        return result

    def node_gpu_memory_gib(self, node_selector: dict[str, str]) -> float | None:
        """The smallest GPU memory (GPU Feature Discovery's `nvidia.com/gpu.memory`, MiB) of
        the nodes the selector picks; None when no selected node says."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(node_selector.items()))
        nodes = self.core.list_node(label_selector=selector or None).items
        labels = [(n.metadata.labels if n.metadata else None) or {} for n in nodes]
        memories = [
            int(found["nvidia.com/gpu.memory"]) / 1024
            for found in labels
            if found.get("nvidia.com/gpu.memory", "").isdigit()
        ]
        return min(memories) if memories else None

    def voice_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )
