"""aiortc set-up at the edge: ICE servers and which local addresses host candidates use.

aioice gathers host candidates on every interface except loopback and has no option to
choose; `use_host_addresses` narrows it (to 127.0.0.1 for a one-machine demo or test, to the
pod IP in a cluster if wanted). aiortc's default STUN server is replaced by the configured
list, which is empty by default, so nothing reaches outside unless asked to.

aiortc also holds four 20 ms audio frames in its receive jitter buffer before releasing one:
80 ms added to every user utterance before VAD hears it, and to every barge-in.
`set_audio_prefetch` makes that a setting. Even at its smallest, aiortc's buffer releases a
frame only once the next frame's first packet has arrived (it cannot otherwise know a video
frame is whole): 20 ms more. With 0 frames, `ArrivalOrderAudioBuffer` releases each audio
packet as it arrives.
"""

from __future__ import annotations

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

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


class ArrivalOrderAudioBuffer(JitterBuffer):
    """No buffering: in WebRTC audio one RTP packet carries one whole Opus frame, so each is
    released as it arrives. A packet older than the last one released is dropped."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last is not None and not uint16_gt(packet.sequence_number, self._last):
            return False, None
        self._last = packet.sequence_number
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def set_audio_prefetch(receiver: RTCRtpReceiver, frames: int) -> None:
    """Replace the receiver's audio jitter buffer with one that holds `frames` frames (aiortc
    fixes 4; 0: none, `ArrivalOrderAudioBuffer`). Call before media flows. Speech
    recognition needs no smooth playout, so no buffer is right for the runtime; a packet that
    arrives later than the buffer holds is dropped."""
    buffer = ArrivalOrderAudioBuffer() if frames == 0 else JitterBuffer(16, prefetch=frames)
    setattr(receiver, "_RTCRtpReceiver__jitter_buffer", buffer)  # noqa: B010
