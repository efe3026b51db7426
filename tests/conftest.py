"""Shared, expensive fixtures: built once per test session.

- `llm_url`: the real local LLM server (llama.cpp + SmolLM2-135M-Instruct), as `parley demo`
  runs it.
- `runtime_host`: a background event loop with the speech models loaded once; tests start
  runtime apps on real sockets with `runtime_host.start(**settings)`.
- `runtime`: one runtime app talking to the real LLM, shared by the conversation tests.
- `control_plane`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok with
  fake GPU nodes, built from pinned upstream modules (`make k8s-tools`). Its component logs
  are kept when a test fails.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from parley.local_llm import LLMServer
from parley_runtime import RuntimeSettings
from tests.support.cluster import CACHE, ControlPlane, build_tools
from tests.support.runtime_host import RunningApp, RuntimeHost, free_port
from tests.support.scripted_llm import ScriptedLLMServer

pytest_plugins = ["pytester", "tests.support.skip_report"]


@pytest.fixture(scope="session")
def llm_url() -> Iterator[str]:
    server = LLMServer(free_port())
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def runtime_host() -> Iterator[RuntimeHost]:
    # The suite runs runtimes, peers, llama.cpp and Chromium on the same two cores, so its
    # frames are late and its turns slow for reasons no production pod has: the measured
    # backpressure triggers and the turn deadline get room here, and the tests of those
    # behaviours (test_backpressure, test_signals) set their own.
    host = RuntimeHost(
        RuntimeSettings(
            ice_host_addresses=["127.0.0.1"],
            turn_deadline_ms=10_000,
            backpressure_loop_lag_ms=[1000, 1500, 2000, 3000],
            backpressure_late_frames=[0.5, 0.6, 0.7, 0.8],
        )
    )
    yield host
    host.close()


@pytest.fixture(scope="session")
def runtime(runtime_host: RuntimeHost, llm_url: str) -> Iterator[RunningApp]:
    app = runtime_host.start(llm_url=llm_url, llm_max_tokens=40, llm_temperature=0.0)
    yield app
    runtime_host.stop(app)


@pytest.fixture(scope="session")
def scripted_llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as server:
        yield server


_failed: list[str] = []
_notes: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in _notes:
        terminalreporter.write_line(note)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    build_tools()
    workdir = CACHE / "test-clusters" / time.strftime("%Y%m%d-%H%M%S")
    plane = ControlPlane(workdir)
    try:
        plane.start()
    except BaseException:
        plane.stop()
        _notes.append(f"control plane failed to start; component logs kept in {plane.logs}")
        raise
    _notes.append(f"control plane started in {plane.startup_s:.1f} s")
    yield plane
    plane.stop()
    if _failed:
        _notes.append(f"a test failed: control plane logs kept in {plane.logs}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
