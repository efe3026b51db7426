#!/usr/bin/env bash
# A kind cluster for machines with Docker (kind cannot run where there is no Docker engine).
# Workers are labelled as GPU Feature Discovery would label GPU nodes, so node selectors in
# the examples match; real GPUs additionally need the NVIDIA device plugin or GPU operator.
set -euo pipefail
command -v kind >/dev/null || { echo "kind is not installed: go install sigs.k8s.io/kind@latest"; exit 1; }
docker info >/dev/null 2>&1 || { echo "no Docker engine here: use make cluster-up instead"; exit 1; }
kind create cluster --name parley --wait 120s --config - <<'YAML'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    labels: {nvidia.com/gpu.present: "true", nvidia.com/gpu.product: NVIDIA-L4, nvidia.com/gpu.memory: "23034"}
YAML
echo "export KUBECONFIG=$(kind get kubeconfig-path --name parley 2>/dev/null || echo "$HOME/.kube/config")"
