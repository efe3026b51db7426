"""A namespace on the test control plane ready for the operator: the CRD installed and
established, the namespace created, and `KUBECONFIG` (plus any other variables the operator
reads) pointing at the plane until the context ends."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tests.support.cluster import ControlPlane

CRD = Path(__file__).resolve().parents[2] / "crds" / "voicedeployment.yaml"


@contextlib.contextmanager
def operator_namespace(
    plane: ControlPlane, namespace: str, **environment: str
) -> Iterator[ControlPlane]:
    plane.kubectl("apply", "--server-side", "-f", str(CRD))
    plane.kubectl(
        "wait", "--for=condition=Established", "crd/voicedeployments.parley.dev", "--timeout=30s"
    )
    plane.kubectl("create", "namespace", namespace)
    environment = {"KUBECONFIG": str(plane.kubeconfig), **environment}
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
