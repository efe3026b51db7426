"""Helm and its surroundings for the chart tests: the helm binary of the test control plane
(`tests/k8s/build-tools.sh`), `helm template` parsed, the prometheus-operator CRDs (which the
test cluster lacks) from a pinned Go module, cached under ~/.cache/parley."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import CACHE, REPO, tools_root

CHART = REPO / "charts" / "parley"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
#: The prometheus-operator release whose CRDs (ServiceMonitor, PodMonitor, PrometheusRule) the
#: tests install; the Go module carries them under example/prometheus-operator-crd/.
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_OPERATOR_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")

Manifest = dict[str, Any]


def helm_bin() -> Path:
    return tools_root() / "bin" / "helm"


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run helm (against `kubeconfig` when given); with `check`, fail with its stderr."""
    command = [str(helm_bin()), *args]
    if kubeconfig is not None:
        command.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result


def template(*args: str) -> list[Manifest]:
    """`helm template parley charts/parley -n parley-system ARGS`, parsed."""
    out = helm("template", "parley", str(CHART), "--namespace", "parley-system", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def prometheus_operator_crds() -> list[Path]:
    """The pinned ServiceMonitor, PodMonitor and PrometheusRule CRDs: downloaded once through
    the Go module proxy (`go mod download`), then read from ~/.cache/parley."""
    cache = CACHE / f"prometheus-operator-{PROMETHEUS_OPERATOR_VERSION}"
    files = [cache / f"monitoring.coreos.com_{name}.yaml" for name in PROMETHEUS_OPERATOR_CRDS]
    if all(f.exists() for f in files):
        return files
    CACHE.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        ["go", "mod", "download", "-json", f"{PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=CACHE,  # outside any Go module
        env={**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"},
    )
    if download.returncode != 0:
        raise RuntimeError(f"go mod download failed:\n{download.stderr}{download.stdout}")
    source = Path(json.loads(download.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    partial = cache.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for f in files:
        shutil.copyfile(source / f.name, partial / f.name)
    shutil.rmtree(cache, ignore_errors=True)
    partial.rename(cache)
    return files


def local_command(container: Manifest) -> list[str]:
    """A container's command and arguments, to run here: `parley` is this virtualenv's."""
    command = [*container.get("command", []), *container.get("args", [])]
    if command and command[0] == "parley":
        command[0] = str(Path(sys.executable).parent / "parley")
    return command
