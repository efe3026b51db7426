"""aiortc set-up at the edge: ICE servers and which local addresses host candidates use.

aioice gathers host candidates on every interface except loopback and has no option to
choose; `use_host_addresses` narrows it (to 127.0.0.1 for a one-machine demo or test, to the
pod IP in a cluster if wanted). aiortc's default STUN server is replaced by the configured
list, which is empty by default, so nothing reaches outside unless asked to.

aiortc also holds four 20 ms audio frames in its receive jitter buffer before releasing one:
80 ms added to every user utterance before VAD hears it, and to every barge-in.
`set_audio_prefetch` makes that a setting.
"""

from __future__ import annotations

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer

_original_host_addresses = aioice.ice.get_host_addresses


def use_host_addresses(addresses: list[str]) -> None:
    if not addresses:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    fixed = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def peer_connection(ice_servers: list[str]) -> RTCPeerConnection:
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])
    )


def set_audio_prefetch(receiver: RTCRtpReceiver, frames: int) -> None:
    """Replace the receiver's audio jitter buffer with one that holds `frames` frames (aiortc
    fixes 4). Call before media flows. Speech recognition needs no smooth playout, so a
    small buffer is right for the runtime; a packet that arrives later than that is dropped."""
    setattr(receiver, "_RTCRtpReceiver__jitter_buffer", JitterBuffer(16, prefetch=frames))  # noqa: B010
