"""`parley demo` as a user runs it: no terminal, prints the address, serves the page, runs
the LLM server below the runtime's CPU priority, and SIGTERM stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.runtime_host import free_port

REPO = Path(__file__).resolve().parents[1]


def proc_stat(path: str) -> tuple[str, list[str]]:
    """A `/proc/.../stat` file: the command name, and the fields after it (the state first)."""
    with open(path) as stat:
        name, rest = stat.read().split("(", 1)[1].rsplit(")", 1)
    return name, rest.split()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                _, fields = proc_stat(f"/proc/{entry}/stat")
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def thread_niceness(pid: int) -> dict[str, int]:
    """Each thread of `pid`: its name and nice value."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name, fields = proc_stat(f"/proc/{pid}/task/{tid}/stat")
        found[f"{name} {tid}"] = int(fields[16])
    return found


def alive(pid: int) -> bool:
    try:
        return proc_stat(f"/proc/{pid}/stat")[1][0] != "Z"
    except OSError:
        return False


def test_demo_starts_serves_and_stops_everything_on_sigterm() -> None:
    port, llm_port = free_port(), free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "parley", "demo", "--port", str(port), "--llm-port", str(llm_port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.strip() == f"open http://127.0.0.1:{port}":
                break
        assert f"open http://127.0.0.1:{port}" in lines, "\n".join(lines)
        assert "Talk" in httpx.get(f"http://127.0.0.1:{port}/").text
        assert httpx.get(f"http://127.0.0.1:{llm_port}/v1/models").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["ready"] is True
        llm_children = children_of(demo.pid)
        assert llm_children, "the LLM server should be a child of the demo"
        (llm,) = llm_children
        threads = thread_niceness(llm)
        assert any(name.startswith("llama-server") for name in threads), threads
        assert len(threads) > 2 and set(threads.values()) == {5}, threads

        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
        time.sleep(0.5)
        assert not [pid for pid in llm_children if alive(pid)], "LLM server left running"
        for url in (f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{llm_port}/v1/models"):
            try:
                httpx.get(url, timeout=1)
                raise AssertionError(f"{url} still answers after SIGTERM")
            except httpx.ConnectError:
                pass
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


README_DEMO_ON_ANOTHER_PORT = "PORT=9000 make demo"


def test_the_readme_command_for_another_port_serves_there() -> None:
    """Run as the README writes it: make passes PORT on to every child, and the LLM server
    must not take it for its own port (it would bind 9000 and the demo would wait for it)."""
    readme = (REPO / "README.md").read_text()
    assert f"`{README_DEMO_ON_ANOTHER_PORT}`" in readme
    demo = subprocess.Popen(
        ["bash", "-c", README_DEMO_ON_ANOTHER_PORT],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (line := demo.stdout.readline()):
            lines.append(line.rstrip())
            if line.strip() == "open http://127.0.0.1:9000":
                break
        assert "open http://127.0.0.1:9000" in lines, "\n".join(lines)
        assert httpx.get("http://127.0.0.1:9000/readyz").json()["ready"] is True
        assert httpx.get("http://127.0.0.1:8081/v1/models").status_code == 200  # its own port
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
