"""The user's audio as the runtime receives it: each RTP packet is heard as it arrives, not one
packet later, as aiortc's jitter buffer would release it."""

from __future__ import annotations

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from parley_runtime.config import RuntimeSettings
from parley_runtime.webrtc import ArrivalOrderAudioBuffer, set_audio_prefetch


def packet(sequence_number: int) -> RtpPacket:
    sent = RtpPacket(
        payload_type=111, sequence_number=sequence_number, timestamp=960 * sequence_number
    )
    sent._data = bytes([sequence_number % 256])  # type: ignore[attr-defined]
    return sent


def released(buffer: JitterBuffer, sequence_numbers: list[int]) -> list[int | None]:
    out = []
    for number in sequence_numbers:
        _, frame = buffer.add(packet(number))
        out.append(None if frame is None else frame.data[0])
    return out


def test_each_packet_is_released_as_it_arrives() -> None:
    assert released(ArrivalOrderAudioBuffer(), [10, 11, 12]) == [10, 11, 12]


def test_aiortc_holds_each_frame_until_the_next_one_arrives() -> None:
    """What the runtime's buffer saves: 20 ms on every frame, even at aiortc's smallest."""
    assert released(JitterBuffer(16, prefetch=0), [10, 11, 12]) == [None, 10, 11]


def test_a_late_packet_is_dropped_and_sequence_numbers_wrap() -> None:
    assert released(ArrivalOrderAudioBuffer(), [65534, 65533, 65535, 0, 65535, 1]) == [
        65534 % 256,
        None,
        65535 % 256,
        0,
        None,
        1,
    ]


async def test_the_runtime_buffers_nothing_by_default() -> None:
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("audio").receiver
    try:
        set_audio_prefetch(receiver, RuntimeSettings().jitter_prefetch_frames)
        buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert isinstance(buffer, ArrivalOrderAudioBuffer)
        set_audio_prefetch(receiver, 2)
        assert type(receiver._RTCRtpReceiver__jitter_buffer) is JitterBuffer  # type: ignore[attr-defined]
    finally:
        await pc.close()
