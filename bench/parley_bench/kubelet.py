"""A kubelet stand-in for the runtime pods of a test cluster.

Each runtime pod the scheduler places (on a kwok node) runs here as a real `parley runtime
serve` process on a loopback address of its own, 127.0.0.N port 8080 (the runtime's port, so
the operator reaches it at `podIP:8080` as in a cluster; every 127/8 address is local on Linux).
The stand-in writes that address into the pod's status as `podIP`, and `Ready` as the process's
`/readyz` says (a draining runtime is not ready), the way kwok writes fake ones. A pod that is
deleted gets SIGTERM: the runtime drains, then exits.

kwok and the stand-in both write these pods' status. kwok's pod-ready stage acts only on a pod
without a `podIP` (see `tools_root()/kwok-stages/pod-ready.yaml`): once the stand-in has set
its address, kwok leaves the pod alone; if kwok's write lands first (a fake IP, Ready before
the process is up), the stand-in's loop writes its own values over it on its next pass. kwok's
pod-delete stage removes a deleted pod at once, so no pod lingers terminating.

Like kubelet, the stand-in mounts the Secret volumes a pod's container mounts: it reads the
Secrets and writes their keys into a folder of its own, and an environment variable of the
container that names a file under such a mount names the written file instead. That is how a
runtime started here gets the admin token file the operator renders (`PARLEY_ADMIN_TOKENS_FILE`
from the Secret `<vd>-runtime-admin`), and the operator's drain calls must carry that token.

`partition(pod)` stops a pod's process but leaves the pod Ready with its address, as a network
partition between the operator and the pod would: its SCOS is unreachable. `restore(pod)`
starts it again, optionally with other settings (`PARLEY_*` variables).

`Kubelet` is the loop; what runs for a pod is its backend: `RuntimeKubelet` starts a runtime
process per pod, `parley bench scaling` also uses SCOS stand-ins (`scos_pods.py`) for a
hundred pods that no machine of this size could run as real runtimes.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import httpx
from kubernetes import client, config

RUNTIME_PORT = 8080
#: The suite runs everything on two cores: measured triggers get room (as in conftest).
RUNTIME_ENV = {
    "PARLEY_BACKPRESSURE_LOOP_LAG_MS": "[1000, 1500, 2000, 3000]",
    "PARLEY_BACKPRESSURE_LATE_FRAMES": "[0.5, 0.6, 0.7, 0.8]",
    "PARLEY_TURN_DEADLINE_MS": "10000",
    "PARLEY_TTFA_SLO_MS": "10000",
}
#: What a runtime started here takes of its container's environment: its credentials.
POD_ENV = (
    "PARLEY_API_TOKENS",
    "PARLEY_API_TOKENS_FILE",
    "PARLEY_ADMIN_TOKENS",
    "PARLEY_ADMIN_TOKENS_FILE",
)


@dataclass
class RuntimeProcess:
    pod: str
    address: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    #: From the pod's container (`POD_ENV`): kept when the process is restored.
    pod_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    partitioned: bool = False
    ready: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.address}:{RUNTIME_PORT}"

    def start(self) -> None:
        command = [sys.executable, "-m", "parley", "runtime", "serve", *self.args]
        env = {
            **os.environ,
            **RUNTIME_ENV,
            "PARLEY_ICE_HOST_ADDRESSES": json.dumps([self.address]),
            **self.pod_env,
            **self.env,
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM (the runtime drains, then exits), SIGKILL after `timeout`; the exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def probe(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.url}/readyz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False


def loopback_address(index: int) -> str:
    """The `index`-th pod address: 127.0.0.2, 127.0.0.3, … (127.0.0.1 is the test's own)."""
    return f"127.0.{index // 250}.{index % 250 + 2}"


class PodBackend(Protocol):
    """What serves one pod at its address: started when the pod is placed, stopped (SIGTERM:
    drained) when it is deleted."""

    address: str
    partitioned: bool
    ready: bool

    def start(self) -> None: ...

    def stop(self, timeout: float = 40) -> int | None: ...

    def probe(self) -> bool: ...


class Kubelet:
    """Plays kubelet for the pods matching `selector` in `namespace` (see the module doc);
    `backend(pod, container, address)` makes what serves each one."""

    def __init__(
        self, kubeconfig: Path | None, namespace: str, selector: str, first_index: int = 0
    ) -> None:
        self.namespace = namespace
        self.selector = selector
        api = config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
        self.core = client.CoreV1Api(api)
        self.exit_codes: dict[str, int | None] = {}
        self._processes: dict[str, PodBackend] = {}
        self._next_index = first_index
        self._lock = threading.Lock()
        #: Held from a runtime's readiness probe to its result, so that a partition never
        #: lands between the two (a probe of the stopping runtime would mark it not Ready).
        self._probing = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)
        self._volumes = Path(tempfile.mkdtemp(prefix="parley-kubelet-"))

    def backend(self, pod: str, container: Any, address: str) -> PodBackend:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            for name, runtime in self._processes.items():
                self.exit_codes[name] = runtime.stop(timeout=5)
        shutil.rmtree(self._volumes, ignore_errors=True)

    def addresses(self) -> dict[str, str]:
        """Pod name → the loopback address its runtime serves on."""
        with self._lock:
            return {name: p.address for name, p in self._processes.items()}

    def url(self, pod: str) -> str:
        with self._lock:
            return f"http://{self._processes[pod].address}:{RUNTIME_PORT}"

    def partition(self, pod: str) -> None:
        """Stop the pod's runtime and keep the pod Ready as it was: its SCOS goes unreachable."""
        with self._lock:
            runtime = self._processes[pod]
        with self._probing:
            runtime.partitioned = True
        runtime.stop()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._sync()
            except Exception as exc:  # the apiserver may be busy; the next pass catches up
                print(f"kubelet stand-in: {exc}", file=sys.stderr)

    def _sync(self) -> None:
        listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        pods: list[Any] = listed.items
        present = set()
        for pod in pods:
            name = pod.metadata.name
            if pod.metadata.deletion_timestamp is not None or not pod.spec.node_name:
                continue
            present.add(name)
            runtime = self._processes.get(name) or self._start(name, self._mounted(pod))
            self._report(pod, runtime)
        for name in set(self._processes) - present:
            with self._lock:
                runtime = self._processes.pop(name)
            # SIGTERM drains: live sessions go on until they end or the drain timeout.
            threading.Thread(target=self._stop_gone, args=(name, runtime), daemon=True).start()

    def _stop_gone(self, name: str, runtime: PodBackend) -> None:
        self.exit_codes[name] = runtime.stop()

    def _start(self, name: str, container: Any) -> PodBackend:
        index, self._next_index = self._next_index, self._next_index + 1
        runtime = self.backend(name, container, loopback_address(index))
        runtime.start()
        with self._lock:
            self._processes[name] = runtime
        return runtime

    def _mounted(self, pod: Any) -> Any:
        """The pod's container as it runs here: its Secret volumes written to local folders,
        and the environment variables that name a file in one naming that file instead."""
        container = copy.deepcopy(pod.spec.containers[0])
        secrets = {v.name: v.secret for v in pod.spec.volumes or () if v.secret is not None}
        mounts = {
            m.mount_path.rstrip("/") + "/": m.name
            for m in container.volume_mounts or ()
            if m.name in secrets
        }
        for var in container.env or ():
            for path, volume in mounts.items():
                if var.value and var.value.startswith(path):
                    folder = self._write_secret(pod.metadata.name, volume, secrets[volume])
                    var.value = str(folder / var.value[len(path) :])
        return container

    def _write_secret(self, pod: str, volume: str, source: Any) -> Path:
        secret = self.core.read_namespaced_secret(source.secret_name, self.namespace)
        folder = self._volumes / pod / volume
        folder.mkdir(parents=True, exist_ok=True)
        data = secret.data or {}
        items = source.items or [client.V1KeyToPath(key=key, path=key) for key in data]
        for item in items:
            target = folder / item.path
            target.write_bytes(base64.b64decode(data[item.key]))
            target.chmod(0o600)
        return folder

    def _report(self, pod: Any, runtime: PodBackend) -> None:
        """Write the pod's address, and Ready as the runtime says, when they differ."""
        with self._probing:
            if not runtime.partitioned:
                runtime.ready = runtime.probe()
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        ready = "True" if runtime.ready else "False"
        if pod.status.pod_ip == runtime.address and conditions.get("Ready") == ready:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        states = {"PodScheduled": "True", "Initialized": "True", "ContainersReady": ready}
        status = {
            "phase": "Running",
            "podIP": runtime.address,
            "podIPs": [{"ip": runtime.address}],
            "conditions": [
                {"type": kind, "status": state, "lastTransitionTime": now}
                for kind, state in {**states, "Ready": ready}.items()
            ],
        }
        # A JSON merge patch replaces the lists: a strategic one would merge kwok's fake IP
        # into `podIPs` with ours (two IPv4 addresses, refused).
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            self.namespace,
            {"status": status},
            _content_type="application/merge-patch+json",
        )


class RuntimeKubelet(Kubelet):
    """A real `parley runtime serve` per pod, with the rendered session cap, drain timeout and
    LLM model, its container's credentials (`POD_ENV`, the admin token file), the given LLM
    server, and `env` (`PARLEY_*` settings) on top of `RUNTIME_ENV`."""

    def __init__(
        self,
        kubeconfig: Path | None,
        namespace: str,
        selector: str,
        llm_url: str,
        logs: Path,
        env: dict[str, str] | None = None,
        first_index: int = 0,
    ) -> None:
        super().__init__(kubeconfig, namespace, selector, first_index)
        self.llm_url = llm_url
        self.logs = logs
        self.env = dict(env or {})

    def backend(self, pod: str, container: Any, address: str) -> RuntimeProcess:
        rendered = list(container.args or [])  # what the operator rendered from the spec
        args = ["--host", address, "--port", str(RUNTIME_PORT), "--llm-url", self.llm_url]
        for flag in ("--max-sessions", "--drain-timeout-s", "--llm-model"):
            args += [flag, rendered[rendered.index(flag) + 1]]
        pod_env = {v.name: v.value for v in container.env or () if v.name in POD_ENV and v.value}
        return RuntimeProcess(
            pod=pod,
            address=address,
            args=args,
            log=self.logs / f"{pod}.log",
            env=self.env,
            pod_env=pod_env,
        )

    def restore(self, pod: str, env: dict[str, str] | None = None) -> None:
        with self._lock:
            runtime = self._processes[pod]
            assert isinstance(runtime, RuntimeProcess)
            runtime.env = {**self.env, **(env or {})}
            runtime.start()
            runtime.partitioned = False
