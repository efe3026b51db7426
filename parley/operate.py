"""`parley operator crd | rbac | run`."""

from __future__ import annotations

import argparse


def operator_command(args: argparse.Namespace) -> int:
    if args.operator_command == "crd":
        from parley_operator.api import crd_yaml

        print(crd_yaml(), end="")
        return 0
    if args.operator_command == "rbac":
        from parley_operator.rbac import cluster_role_yaml

        print(cluster_role_yaml(), end="")
        return 0
    import kopf

    import parley_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=False)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        standalone=args.peering is None,
        peering_name=args.peering,
    )
    return 0
