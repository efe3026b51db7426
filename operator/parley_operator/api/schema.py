"""The CustomResourceDefinition, with the spec's OpenAPI schema generated from the API types.

`openapi_schema` turns a model into a structural schema the way controller-gen turns Go types
into one: camelCase properties, required fields, defaults, ranges, enums, descriptions, and the
`json_schema_extra` of models and fields (CEL rules, `x-kubernetes-*` markers). An object
field whose model has defaults for everything defaults to `{}`, and the apiserver fills in the
defaults inside it as the model does; one whose model has CEL rules defaults to all of its
fields. The status, which the operator writes and never parses, is described by hand below.
"""

from __future__ import annotations

from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from parley_operator.api.types import (
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    MAX_SOAK_HISTORY,
    NAME_PATTERN,
    PLURAL,
    SHORT_NAMES,
    VERSION,
    Schema,
    VoiceDeploymentSpec,
    rule,
)

_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}
#: pydantic's field constraints (annotated-types metadata) → OpenAPI keywords.
_CONSTRAINTS = {
    "ge": "minimum",
    "le": "maximum",
    "min_length": "minLength",
    "max_length": "maxLength",
    "pattern": "pattern",
}


# -- generated from the models -----------------------------------------------------------------


def openapi_schema(model: type[BaseModel]) -> Schema:
    """`model` as a structural OpenAPI v3 schema; its docstring is the object's description."""
    properties: Schema = {}
    required = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        properties[key] = _field_schema(field)
        if field.is_required():
            required.append(key)
    schema: Schema = {
        "type": "object",
        "description": _description(model),
        "properties": properties,
    }
    if required:
        schema["required"] = required
    return schema | _extra(model.model_config.get("json_schema_extra"))


def _description(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    if not doc:
        raise TypeError(f"{model.__name__} has no docstring to describe it in the CRD")
    return " ".join(doc.split())


def _field_schema(field: FieldInfo) -> Schema:
    typed = _type_schema(field.annotation)
    schema: Schema = {"type": typed.pop("type")}
    if field.description:
        schema["description"] = field.description
    schema |= typed
    default = _default(field)
    if default is not None:
        schema["default"] = default
    for constraint in field.metadata:
        schema |= _constraint(constraint)
    return schema | _extra(field.json_schema_extra)


def _type_schema(annotation: Any) -> Schema:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        present = [arg for arg in args if arg is not type(None)]
        if len(present) != 1:
            raise TypeError(f"only `X | None` unions have a schema, not {annotation}")
        return _type_schema(present[0])  # optional: absent, not null
    if origin is Literal:
        if not all(isinstance(arg, str) for arg in args):
            raise TypeError(f"only string enums have a schema, not {annotation}")
        return {"type": "string", "enum": list(args)}
    if origin in (tuple, list):
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict:
        if args[1] is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return openapi_schema(annotation)
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    raise TypeError(f"no OpenAPI type for {annotation}")


def _default(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return None
    if isinstance(value, BaseModel):
        # The apiserver checks a default against its object's CEL rules as it stands, without
        # the defaults inside it: an object with rules gets every field written out.
        complete = "x-kubernetes-validations" in _extra(value.model_config.get("json_schema_extra"))
        return value.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude_unset=not complete
        )
    return value


def _constraint(constraint: object) -> Schema:
    keywords = {
        keyword: getattr(constraint, attribute)
        for attribute, keyword in _CONSTRAINTS.items()
        if getattr(constraint, attribute, None) is not None
    }
    if not keywords:
        raise TypeError(f"no OpenAPI keyword for the constraint {constraint!r}")
    return keywords


def _extra(extra: object) -> Schema:
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise TypeError("json_schema_extra must be a dict to reach the CRD")
    return dict(extra)


# -- written by hand ---------------------------------------------------------------------------


def _object(description: str, properties: Schema, **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def _number(description: str) -> Schema:
    return {"type": "number", "description": description}


def _boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def _time(description: str) -> Schema:
    return _string(description, format="date-time")


def soak_status_schema() -> Schema:
    """`status.soak`: the run going, the one waiting, the schedule and the last runs' results
    (written by `parley_operator.soak`; `runs.py` describes each field)."""
    run = {
        "runId": _string("The run's id: the parley.dev/soak-now value, or scheduled-<slot>."),
        "trigger": _string("How the run was started.", enum=["OnDemand", "Scheduled"]),
        "job": _string("The run's Job."),
        "startedAt": _time("When the operator created the Job."),
        "sessions": _integer("Concurrent sessions."),
        "durationSeconds": _number("How long the soak runs (or ran)."),
        "generation": _integer("The VoiceDeployment's generation when the run started."),
    }
    percentiles = _object(
        "Percentiles of one latency, in ms, over the steady state when it has samples.",
        {
            "p50": _number("Median, ms."),
            "p95": _number("95th percentile, ms."),
            "samples": _integer("Samples."),
            "scope": _string("steady or all (turns before the steady state included)."),
        },
    )
    criterion = _object(
        "One pass criterion: its limit, the measured value, and whether it was met (absent: "
        "no samples).",
        {
            "max": _number("Upper limit."),
            "min": _number("Lower limit."),
            "value": _number("Measured."),
            "passed": _boolean("Whether the value is within the limit."),
        },
    )
    record = _object(
        "The result of a finished run.",
        {
            **run,
            "passed": _boolean("Whether the run met every criterion."),
            "turns": _integer("Turns attempted."),
            "errors": _integer("Error events received."),
            "errorRate": _number("Failed turns and connections over all attempts."),
            "rejections": _integer("Connection attempts refused with 503 (load shedding)."),
            "cutSessions": _integer("Sessions the server ended."),
            "latencyMs": _object(
                "Latency percentiles.",
                {"ttfa": percentiles, "bargeIn": percentiles, "v2v": percentiles},
            ),
            "criteria": {
                "type": "object",
                "description": "Each criterion by name (ttfaP95Ms, bargeInP95Ms, errorRate, "
                "answeredTurns).",
                "additionalProperties": criterion,
            },
            "harnessError": _string("Why the run has no result, when it failed to measure."),
        },
    )
    return _object(
        "Soak tests: the run going, the one waiting, the schedule, the last results.",
        {
            "running": _object(
                "The run whose Job is running; while set, a scale-down must not cut its sessions.",
                run,
            ),
            "queued": _object(
                "A run waiting for the running one to end or for a ready runtime pod.",
                {
                    "runId": run["runId"],
                    "trigger": run["trigger"],
                    "queuedAt": _time("When the run was queued."),
                },
            ),
            "lastTrigger": _string("The last parley.dev/soak-now value handled."),
            "runs": _integer("Runs started so far (the next Job is <name>-soak-<runs + 1>)."),
            "schedule": _object(
                "The cron schedule as the operator follows it.",
                {
                    "expression": _string("The spec.soak.schedule followed."),
                    "lastSlot": _time("The last slot handled (run or skipped)."),
                    "nextSlot": _time("The next slot."),
                    "error": _string("Why the expression cannot be followed."),
                },
            ),
            "history": {
                "type": "array",
                "description": "Finished runs, newest first (spec.soak.history of them).",
                "maxItems": MAX_SOAK_HISTORY,
                "items": record,
            },
        },
    )


#: Decisions kept in `status.scaling.decisions`, newest first.
MAX_SCALING_DECISIONS = 10


def scaling_status_schema() -> Schema:
    """`status.scaling`: what the autoscaler saw and decided in its last round, and its last
    decisions that changed something (written by `parley_operator.autoscaler`)."""
    pods = {"type": "array", "items": {"type": "string"}}
    decision = _object(
        "One decision that changed something.",
        {
            "time": _time("When it was made."),
            "direction": _string("up or down.", enum=["up", "down"]),
            "from": _integer("Runtime replicas before."),
            "to": _integer("Runtime replicas after (a drain lowers them once it ends)."),
            "cause": _string(
                "Why, as one of a fixed set: min, demand, backpressure, undrain, low_demand, "
                "above_max, drained, drain_timeout."
            ),
            "reason": _string("Why, in words: the demand arithmetic and what was done."),
        },
    )
    return _object(
        "The runtime autoscaler's view: replicas, sessions, backpressure, its last decisions.",
        {
            "desiredReplicas": _integer("Runtime replicas the autoscaler decided on."),
            "currentReplicas": _integer("Runtime pods that exist and are not terminating."),
            "sessions": _integer("Active sessions on the pods that answered."),
            "capacity": _integer("Session capacity of the answering pods that admit sessions."),
            "highestBackpressure": _object(
                "The highest backpressure level among the answering pods.",
                {
                    "level": _integer("0 (NORMAL) to 4 (SESSION_REJECT)."),
                    "name": _string("The level's name, e.g. ADMISSION_LIMITED."),
                    "pods": {**pods, "description": "The pods at that level (none at NORMAL)."},
                },
            ),
            "unscrapedPods": {
                **pods,
                "description": "Ready or draining pods whose SCOS could not be read this round.",
            },
            "drainingPods": {**pods, "description": "Pods being drained before a scale-down."},
            "decisions": {
                "type": "array",
                "description": "The last decisions that changed something, newest first.",
                "maxItems": MAX_SCALING_DECISIONS,
                "items": decision,
            },
        },
    )


def status_schema() -> Schema:
    replicas = _object(
        "Replica counts of one component.",
        {"desired": _integer("Desired replicas."), "ready": _integer("Ready replicas.")},
    )
    return _object(
        "Observed state, written by the operator.",
        {
            "observedGeneration": _integer("The generation this status describes."),
            "conditions": {
                "type": "array",
                "description": "Ready, Progressing, Degraded, VRAMBudget, SoakPassing, "
                "SignalsAvailable.",
                "items": _object(
                    "A standard condition.",
                    {
                        "type": _string("Condition type."),
                        "status": _string(
                            "True, False or Unknown.", enum=["True", "False", "Unknown"]
                        ),
                        "reason": _string("Machine-readable reason (one catalogue)."),
                        "message": _string("Human-readable detail."),
                        "lastTransitionTime": _string(
                            "When status last changed.", format="date-time"
                        ),
                        "observedGeneration": _integer("Generation it was set for."),
                    },
                    required=["type", "status"],
                ),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "runtime": replicas,
            "llm": replicas,
            "tts": replicas,
            "runtimeReplicas": _string("Runtime ready/desired, for kubectl get."),
            "sessions": _integer("Active sessions across runtime pods."),
            "backpressure": _string("Highest backpressure level reported by the runtime pods."),
            "vramPlan": {
                "type": "array",
                "description": "Per-GPU placement and caps computed by the VRAM planner.",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
            "soak": soak_status_schema(),
            "scaling": scaling_status_schema(),
        },
    )


def name_rules() -> list[Schema]:
    """The name must name the children's Services (`<name>-runtime`: a DNS-1035 label)."""
    return [
        rule(
            f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters: the children's "
            f"Services are named <name>-runtime, <name>-llm and <name>-tts (at most 63)",
            ".metadata",
        ),
        rule(
            f"self.metadata.name.matches('{NAME_PATTERN}')",
            "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter and ending with a letter or digit): it names Services",
            ".metadata",
        ),
    ]


def crd() -> Schema:
    """The CustomResourceDefinition, as a plain dict ready for YAML or the API."""
    ready = '.status.conditions[?(@.type=="Ready")].status'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "voicedeployment",
                "kind": KIND,
                "listKind": f"{KIND}List",
                "shortNames": SHORT_NAMES,
                "categories": ["parley"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "string", "jsonPath": ready},
                        {
                            "name": "Runtime",
                            "type": "string",
                            "jsonPath": ".status.runtimeReplicas",
                            "description": "Runtime ready/desired replicas.",
                        },
                        {"name": "Sessions", "type": "integer", "jsonPath": ".status.sessions"},
                        {
                            "name": "Backpressure",
                            "type": "string",
                            "jsonPath": ".status.backpressure",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": _object(
                            "A realtime voice agent: runtime, LLM and TTS workloads on GPUs.",
                            {
                                "apiVersion": _string("API version."),
                                "kind": _string("Kind."),
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(VoiceDeploymentSpec),
                                "status": status_schema(),
                            },
                            required=["spec"],
                            **{"x-kubernetes-validations": name_rules()},
                        )
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = (
        "# Generated from operator/parley_operator/api/ by `parley operator crd`; do not edit.\n"
    )
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
