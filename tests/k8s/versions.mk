# Pinned versions of the test control plane, in one place (read by the Makefile and by
# tests/k8s/build-tools.sh). To bump: change a line here, then run
# `tests/k8s/build-tools.sh --regenerate` (rewrites the wrapper go.mod files) and `make test`.
KUBERNETES_VERSION := v1.36.3
ETCD_VERSION := v3.6.16
HELM_VERSION := v3.21.4
KWOK_VERSION := v0.7.0
