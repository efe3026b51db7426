"""A real Kubernetes control plane on loopback for tests and for people: etcd, kube-apiserver
(RBAC on), kube-controller-manager, kube-scheduler and kwok with fake GPU nodes.

The binaries come from `tests/k8s/build-tools.sh` (pinned upstream Go modules, cached under
~/.cache/parley/k8s). `ControlPlane` is what the pytest fixture uses; `python -m
tests.support.cluster up|down` is what `make cluster-up` / `make cluster-down` run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.pki import PKI, SERVICE_CIDR
from tests.support.runtime_host import free_port

REPO = Path(__file__).resolve().parents[2]
VERSIONS = REPO / "tests" / "k8s" / "versions.mk"
CACHE = Path(os.environ.get("PARLEY_CACHE", Path.home() / ".cache" / "parley"))

#: GPU nodes as GPU Feature Discovery would label them: (name, product, memory MiB, gpus).
GPU_NODES = [
    ("gpu-h100-0", "NVIDIA-H100-80GB-HBM3", 81559, 8),
    ("gpu-h100-1", "NVIDIA-H100-80GB-HBM3", 81559, 8),
    ("gpu-l4-0", "NVIDIA-L4", 23034, 1),
]


def versions() -> dict[str, str]:
    pins = {}
    for line in VERSIONS.read_text().splitlines():
        if ":=" in line and not line.startswith("#"):
            name, value = (part.strip() for part in line.split(":=", 1))
            pins[name] = value
    return pins


def tools_root() -> Path:
    v = versions()
    key = (
        f"k8s-{v['KUBERNETES_VERSION']}_etcd-{v['ETCD_VERSION']}"
        f"_helm-{v['HELM_VERSION']}_kwok-{v['KWOK_VERSION']}"
    )
    return CACHE / "k8s" / key


def build_tools() -> Path:
    """Build what is missing (no-op when cached); returns the bin directory."""
    subprocess.run([str(REPO / "tests" / "k8s" / "build-tools.sh")], check=True)
    return tools_root() / "bin"


def node_manifest(name: str, product: str, memory_mib: int, gpus: int) -> dict[str, object]:
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.memory": str(memory_mib),
                "nvidia.com/gpu.count": str(gpus),
            },
        },
        "status": {"capacity": resources, "allocatable": resources},
    }


@dataclass
class ControlPlane:
    workdir: Path
    bin: Path = field(default_factory=lambda: tools_root() / "bin")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    startup_s: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def start(self) -> ControlPlane:
        started = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        pki = PKI(self.workdir / "pki").generate()
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd}",
                f"--advertise-client-urls={etcd}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )
        self._wait("etcd", lambda: _get(f"{etcd}/health") is not None)
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._write_kubeconfig(pki)
        self._wait("kube-apiserver", lambda: _get(f"{self.server}/readyz", pki) == "ok")
        common = [
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--v=1",
            # Client rate limits well above the defaults (20-50 QPS): one machine plays a whole
            # cluster here, and `parley bench operator` creates a thousand pods at once.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                *common,
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                # kwok renews node leases from the same few cores as everything else; under
                # bench load a renewal can be late, which must not take the nodes NotReady.
                "--node-monitor-grace-period=3m",
            ],
        )
        self._spawn("kube-scheduler", common)
        stages = sorted(str(p) for p in (tools_root() / "kwok-stages").glob("*.yaml"))
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.0/16",
                "--server-address=",
                # Without leases a kwok node's only heartbeat is the status kwok wrote once: every
                # node-monitor grace period the node lifecycle controller takes it NotReady, marks
                # its pods NotReady and taints it, until kwok initializes it again.
                "--node-lease-duration-seconds=40",
                *[f"--config={path}" for path in stages],
            ],
        )
        for node in GPU_NODES:
            self.kubectl("apply", "-f", "-", input=json.dumps(node_manifest(*node)))
        self._wait(
            "default service account",
            lambda: self._succeeds("get", "serviceaccount", "default", "-n", "default"),
        )
        self._wait("fake GPU nodes Ready", self._nodes_ready)
        self.startup_s = time.monotonic() - started
        return self

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes.pop(name)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [str(self.bin / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"{name} exited ({process.returncode}) while waiting for {what}:\n{tail}"
                    )
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}; logs in {self.logs}")

    def _succeeds(self, *args: str) -> bool:
        try:
            self.kubectl(*args)
        except RuntimeError:
            return False
        return True

    def _nodes_ready(self) -> bool:
        out = self.kubectl("get", "nodes", "-o", "json")
        nodes = json.loads(out)["items"]
        ready = [
            n
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions", [])
            )
        ]
        return len(ready) == len(GPU_NODES)

    def _write_kubeconfig(self, pki: PKI) -> None:
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "parley",
                    "clusters": [
                        {
                            "name": "parley",
                            "cluster": {
                                "server": self.server,
                                "certificate-authority": str(pki.ca_cert),
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": "admin",
                            "user": {
                                "client-certificate": str(pki.admin_cert),
                                "client-key": str(pki.admin_key),
                            },
                        }
                    ],
                    "contexts": [
                        {"name": "parley", "context": {"cluster": "parley", "user": "admin"}}
                    ],
                }
            )
        )


def _get(url: str, pki: PKI | None = None) -> str | None:
    context = None
    if pki is not None:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.read().decode()
    except OSError:
        return None


# -- make cluster-up / cluster-down ---------------------------------------------------------

STATE = CACHE / "cluster"


def up() -> int:
    if (STATE / "pids.json").exists():
        print(f"a cluster is already up (state in {STATE}); run `make cluster-down` first")
        return 1
    build_tools()
    plane = ControlPlane(STATE).start()
    pids = {name: p.pid for name, p in plane.processes.items()}
    (STATE / "pids.json").write_text(json.dumps(pids))
    print(f"control plane ready in {plane.startup_s:.1f} s; logs in {plane.logs}")
    print(plane.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product").rstrip())
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return 0


def down() -> int:
    state = STATE / "pids.json"
    if not state.exists():
        print("no cluster is up")
        return 0
    for name, pid in reversed(list(json.loads(state.read_text()).items())):
        _terminate(pid)
        print(f"stopped {name} ({pid})")
    shutil.rmtree(STATE)
    return 0


def _terminate(pid: int, grace_s: float = 15) -> None:
    """SIGTERM, wait for the process to go, SIGKILL after the grace period."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    sys.exit({"up": up, "down": down}.get(command, lambda: (print("usage: up|down"), 2)[1])())
