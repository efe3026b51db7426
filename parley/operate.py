"""`parley operator crd [--apply] | rbac [--namespace NS ...] | run`."""

from __future__ import annotations

import argparse
import sys

#: The field manager of `parley operator crd --apply`.
FIELD_MANAGER = "parley"


def operator_command(args: argparse.Namespace) -> int:
    if args.operator_command == "crd" and args.apply:
        return apply_crd()
    if args.operator_command == "crd":
        from parley_operator.api import crd_yaml

        print(crd_yaml(), end="")
        return 0
    if args.operator_command == "rbac":
        from parley_operator.rbac import rbac_yaml

        print(rbac_yaml(args.namespace or ()), end="")
        return 0
    return run_operator(args)


def apply_crd() -> int:
    """Server-side apply the VoiceDeployment CRD this installation carries, with the official
    client (no kubectl needed): the Helm chart's pre-upgrade hook, since Helm never upgrades
    what its `crds/` installed. Conflicts are forced, so the fields Helm or kubectl set when they
    installed an older CRD change hands to the field manager `parley`. Credentials: $KUBECONFIG
    or ~/.kube/config when there is one, the pod's service account otherwise."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    from parley_operator.api import crd

    manifest = crd()
    name = manifest["metadata"]["name"]
    config.load_config()
    try:
        client.ApiextensionsV1Api().patch_custom_resource_definition(
            name,
            manifest,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    except ApiException as exc:
        print(
            f"error: applying customresourcedefinition/{name}: {exc.status} {exc.reason}: "
            f"{exc.body}",
            file=sys.stderr,
        )
        return 1
    print(f"customresourcedefinition/{name} serverside-applied")
    return 0


def run_operator(args: argparse.Namespace) -> int:
    import kopf

    import parley_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=False)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
    )
    return 0
