"""A Service's virtual IP, played on loopback: what kube-proxy does for the runtime Service.

Each TCP connection to `url` goes to one ready endpoint picked at random, as kube-proxy's
iptables mode does, and stays with it: a session's offer and the HTTP requests that follow on
the same connection reach the same pod. The endpoints are what the EndpointSlice controller
would compute: the pods matching the Service's selector that are Ready and not terminating,
read from the API server (as the kubelet stand-in writes them) every half second. The WebRTC
media then flows to the pod's own address, as in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

from kubernetes import client

REFRESH_S = 0.5


def ready_addresses(pods: list[Any]) -> list[str]:
    """The pod IPs an EndpointSlice would list as ready."""
    return sorted(
        pod.status.pod_ip
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and pod.status.pod_ip
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    )


class ServiceProxy:
    def __init__(self, core: client.CoreV1Api, namespace: str, selector: str, port: int) -> None:
        self._core = core
        self._namespace = namespace
        self._selector = selector
        self._port = port
        self._endpoints: list[str] = []
        self._random = random.Random(0)
        self.url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ServiceProxy]:
        await self._refresh()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        refresher = asyncio.create_task(self._keep_refreshing(), name="service-endpoints")
        try:
            async with server:
                yield self
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher

    async def _refresh(self) -> None:
        listed = await asyncio.to_thread(
            self._core.list_namespaced_pod, self._namespace, label_selector=self._selector
        )
        self._endpoints = ready_addresses(listed.items)

    async def _keep_refreshing(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            with contextlib.suppress(client.ApiException, OSError):
                await self._refresh()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._endpoints:  # no ready endpoint: the connection is refused, as in a cluster
            writer.close()
            return
        address = self._random.choice(self._endpoints)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(address, self._port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                _pipe(reader, upstream_writer),
                _pipe(upstream_reader, writer),
                return_exceptions=True,
            )
        except asyncio.CancelledError:  # the proxy is closing: drop the connection quietly
            upstream_writer.close()
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
