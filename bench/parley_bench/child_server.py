"""A server a benchmark runs as a child process: in its own process group (so that it and
whatever it starts stop together), its output in a log file, ready once a health URL answers
200. The capacity bench runs `parley runtime serve` this way, the compare bench that and the
Pipecat bot."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChildServer:
    """`command`, serving at `url`, ready when `url + health_path` answers 200."""

    def __init__(
        self,
        name: str,
        command: list[str],
        url: str,
        health_path: str,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.log_path = log_path
        self._command = command
        self._health_url = f"{url}{health_path}"
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout_s: float = 180) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self._process.returncode}; see {self.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self._health_url, timeout=1).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} was not ready in {timeout_s:.0f} s; see {self.log_path}")

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM to the process group (a runtime drains: our sessions are already closed),
        SIGKILL after `grace_s`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
