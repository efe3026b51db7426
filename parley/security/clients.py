"""Who the client is: its address, for rate limits, and whether it is this host.

The peer address of the connection is the client, unless the peer is a trusted proxy
(`trusted_proxies`, addresses or networks): then `X-Forwarded-For` is read from the right,
past every trusted hop, and the first address that is not one is the client. Without a trusted
proxy configured the header is never believed (anyone can send it).

A client is *local* when the peer is a loopback address and the request carries no forwarding
header: a proxy on this host (a service-mesh sidecar, say) forwards other machines' requests
from loopback, and those must not pass for local ones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
#: IPv6 clients are counted by /64: one host usually holds a whole /64.
IPV6_CLIENT_PREFIX = 64


@dataclass(frozen=True)
class Client:
    address: str
    local: bool


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """`["10.0.0.0/8", "127.0.0.1"]` → networks; a bad one raises ValueError."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(address: Address | None, trusted: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_of(peer: str | None, headers: Mapping[str, str], trusted: Sequence[Network]) -> Client:
    """The client of a request from `peer` (the connection's address) with these headers."""
    peer_address = _address(peer) if peer else None
    forwarded_for = headers.get("x-forwarded-for")
    if forwarded_for and _trusted(peer_address, trusted):
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not _trusted(_address(hop), trusted):
                return Client(hop, local=False)
        return Client(hops[0] if hops else str(peer), local=False)
    forwarded = any(name in headers for name in FORWARDING_HEADERS)
    local = peer_address is not None and peer_address.is_loopback and not forwarded
    return Client(str(peer_address or peer or "unknown"), local)


def rate_key(address: str) -> str:
    """What a rate limit counts by: the address, or its /64 for IPv6."""
    parsed = _address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(parsed)
