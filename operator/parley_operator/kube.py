"""The operator's thin adapter to the Kubernetes API (the official client, blocking: the
handlers call it in worker threads): server-side apply under one field manager, listing and
deleting children, creating soak Jobs and reading their pods, merge patches (the autoscaler's
replicas and pod annotations), status patches. What the operator reads often (children, nodes,
runtime pods, its own resources) comes from kopf's in-memory indexes, not from here."""

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

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create `manifest`; the object as stored. When one of that name exists already, that
        one is returned: a name is claimed once (a soak run's Job), so a create repeated after
        a lost status write finds the first object instead of making a second."""
        resource = self.dynamic.resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        meta = manifest["metadata"]
        try:
            stored = resource.create(body=manifest, namespace=meta.get("namespace"))
        except ApiException as exc:
            if exc.status != 409:
                raise
            stored = resource.get(name=meta["name"], namespace=meta.get("namespace"))
        result: dict[str, Any] = stored.to_dict()
        return result

    def objects(
        self, api_version: str, kind: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        """The objects of a kind matching the label selector, in full."""
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        found = resource.get(namespace=namespace, label_selector=selector)
        return [item.to_dict() for item in found.items]

    def children(self, namespace: str, selector: str) -> list[tuple[str, str, str]]:
        """(apiVersion, kind, name) of every child kind matching the label selector."""
        found = []
        for api_version, kind in CHILD_KINDS:
            resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
            for item in resource.get(namespace=namespace, label_selector=selector).items:
                found.append((api_version, kind, item.metadata.name))
        return found

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object, or None when there is none."""
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        try:
            found: dict[str, Any] = resource.get(name=name, namespace=namespace).to_dict()
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None
        return found

    def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A JSON merge patch under the operator's field manager: only the fields `patch` names
        change (null removes one), unlike an apply of a partial object, which would drop the
        fields it leaves out. The object as stored afterwards, or None when there is none."""
        resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        try:
            patched: dict[str, Any] = resource.patch(
                body=patch,
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                field_manager=FIELD_MANAGER,
            ).to_dict()
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None
        return patched

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
