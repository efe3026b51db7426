"""Schema defaults applied the way the apiserver applies them, for pure code and tests that
start from a manifest rather than from an object read back from the API."""

from __future__ import annotations

import copy
from typing import Any

from parley_operator.api import crd


def _apply(schema: dict[str, Any], value: Any) -> Any:
    if schema.get("type") == "object" and isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value and value[name] is None and not child.get("nullable"):
                del value[name]  # the apiserver prunes nulls of non-nullable fields, then defaults
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _apply(child, value[name])
    elif schema.get("type") == "array" and isinstance(value, list) and "items" in schema:
        return [_apply(schema["items"], item) for item in value]
    return value


def with_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of `spec` with every schema default filled in."""
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    result: dict[str, Any] = _apply(root["properties"]["spec"], copy.deepcopy(spec))
    return result
