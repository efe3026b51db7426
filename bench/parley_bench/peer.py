"""A scripted WebRTC peer: speaks pre-synthesized audio into a session, records what the agent
says back with arrival times, and collects the `events` data channel.

It is a real aiortc client speaking the runtime's HTTP contract, used by the end-to-end tests,
`parley bench latency`, `parley soak` and `parley bench capacity`. Long runs (soak, capacity)
bound what it keeps: `AgentRecorder(keep_s=..., keep_audio=False)` and `Peer(event_types=...)`.
With `signalling=SMALL_WEBRTC_SIGNALLING` the same peer, media and all, talks to Pipecat's
SmallWebRTC endpoint instead (`parley bench compare`): one probe for both stacks.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from parley.pcm import OUTPUT_FRAME_SAMPLES, OUTPUT_RATE, VOICED_PEAK, Resampler, is_voiced
from parley_runtime.audio import FramePacer, audio_frame
from parley_runtime.webrtc import peer_connection, set_audio_prefetch


@dataclass(frozen=True)
class Signalling:
    """Where a peer posts its SDP offer, and how it knows the session is up: Parley's runtime
    opens the `events` data channel; a server without one (audio only) is up once ICE and
    DTLS are connected."""

    offer_path: str
    events_channel: bool


PARLEY_SIGNALLING = Signalling("/v1/sessions", events_channel=True)
#: Pipecat's SmallWebRTC signalling (its runner's `POST /api/offer`): audio only.
SMALL_WEBRTC_SIGNALLING = Signalling("/api/offer", events_channel=False)


def voiced_span(pcm: np.ndarray) -> tuple[int, int]:
    """Indices of the first and last samples above the voiced threshold (0, 0 when none):
    where an utterance really starts and ends, whatever silence surrounds it."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > VOICED_PEAK)
    return (int(loud[0]), int(loud[-1])) if loud.size else (0, 0)


@dataclass
class _Utterance:
    pcm: np.ndarray
    last_voiced: int
    first_voiced: int
    started: asyncio.Future[float]
    finished: asyncio.Future[float]


class ScriptedMicrophone(MediaStreamTrack):
    """A paced 48 kHz mono track that sends queued utterances, and between them silence or,
    with `noise_rms` > 0, a low noise floor (a room, not digital zeros)."""

    kind = "audio"

    def __init__(self, noise_rms: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self._queue: list[_Utterance] = []
        self._offset = 0
        self._pacer = FramePacer()
        self._floor = _noise_floor(noise_rms, seed)
        self._floor_offset = 0

    def say(self, pcm: np.ndarray) -> _Utterance:
        """Queue `pcm` (48 kHz mono int16). `started` resolves with the send time of the first
        voiced sample, `finished` with that of the last voiced sample (not of the silence
        after it)."""
        first_voiced, last_voiced = voiced_span(pcm)
        loop = asyncio.get_running_loop()
        utterance = _Utterance(
            pcm.astype(np.int16),
            last_voiced,
            first_voiced,
            loop.create_future(),
            loop.create_future(),
        )
        self._queue.append(utterance)
        return utterance

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._pacer.wait()
        return audio_frame(self._next(), pts)

    def _next(self) -> np.ndarray:
        if not self._queue:
            return self._idle()
        out = np.zeros(OUTPUT_FRAME_SAMPLES, dtype=np.int16)
        utterance = self._queue[0]
        begin, end = self._offset, self._offset + OUTPUT_FRAME_SAMPLES
        piece = utterance.pcm[begin:end]
        out[: len(piece)] = piece
        now = time.monotonic()
        if begin <= utterance.first_voiced < end and not utterance.started.done():
            utterance.started.set_result(now)
        if begin <= utterance.last_voiced < end and not utterance.finished.done():
            utterance.finished.set_result(now)
        self._offset = end
        if end >= len(utterance.pcm):
            if not utterance.finished.done():
                utterance.finished.set_result(now)
            self._queue.pop(0)
            self._offset = 0
        return out

    def _idle(self) -> np.ndarray:
        if self._floor is None:
            return np.zeros(OUTPUT_FRAME_SAMPLES, dtype=np.int16)
        begin = self._floor_offset
        self._floor_offset = (begin + OUTPUT_FRAME_SAMPLES) % len(self._floor)
        return self._floor[begin : begin + OUTPUT_FRAME_SAMPLES]


def _noise_floor(rms: float, seed: int) -> np.ndarray | None:
    """One second of Gaussian noise at `rms` (int16 units), looped: cheap per frame, and far
    below both the voiced threshold and what Silero calls speech at `rms` of a few dozen."""
    if rms <= 0:
        return None
    noise = np.random.default_rng(seed).normal(0.0, rms, OUTPUT_RATE)
    return np.clip(noise, -32768, 32767).astype(np.int16)


@dataclass
class AgentRecorder:
    """Receives the agent's audio: 48 kHz mono samples plus per-frame arrival times.

    `keep_s` drops frames older than that (a long soak would otherwise keep every frame), and
    `keep_audio=False` keeps only the arrival times and loudness, not the samples."""

    frames: list[tuple[float, bool]] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)
    keep_s: float | None = None
    keep_audio: bool = True
    _task: asyncio.Task[None] | None = None

    def start(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        resampler = Resampler(OUTPUT_RATE)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                pcm = resampler.frame(frame)
                now = time.monotonic()
                if self.keep_audio:
                    self.chunks.append(pcm)
                self.frames.append((now, is_voiced(pcm)))
                if self.keep_s is not None and now - self.frames[0][0] > self.keep_s + 10:
                    self._forget_before(now - self.keep_s)

    def _forget_before(self, t: float) -> None:
        """Drop what arrived before `t` (in batches of ~10 s, so trimming stays cheap)."""
        cut = bisect.bisect_left(self.frames, t, key=lambda frame: frame[0])
        del self.frames[:cut]
        if self.keep_audio:
            del self.chunks[:cut]

    def audio(self, since: float = 0.0) -> np.ndarray:
        picked = [c for (t, _), c in zip(self.frames, self.chunks, strict=False) if t >= since]
        return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int16)

    def first_voiced_after(self, t: float) -> float | None:
        start = bisect.bisect_right(self.frames, t, key=lambda frame: frame[0])
        return next((at for at, voiced in self.frames[start:] if voiced), None)

    def last_voiced(self) -> float | None:
        return next((at for at, voiced in reversed(self.frames) if voiced), None)

    def voiced_since(self, t: float) -> bool:
        return any(voiced for at, voiced in self.frames if at > t)

    async def wait_voiced_after(self, t: float, timeout: float) -> float:
        """Wait for the first audible agent frame received after `t`."""
        deadline = time.monotonic() + timeout
        while (first := self.first_voiced_after(t)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agent audio within {timeout}s")
            await asyncio.sleep(0.01)
        return first

    async def wait_quiet(self, quiet_s: float, timeout: float) -> float | None:
        """Wait until no audible frame has arrived for `quiet_s`; return the last audible one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.last_voiced()
            if last is None or time.monotonic() - last >= quiet_s:
                return last
            await asyncio.sleep(0.02)
        raise TimeoutError(f"agent still speaking after {timeout}s")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Peer:
    """One client session against a running runtime at `base_url`.

    `event_types`, when given, is the set of event types kept in `events` (others are
    dropped on arrival). `disconnected` is set once the connection fails or closes, or the
    `events` channel closes: whichever side ended the session. `signalling` picks the
    server's kind: Parley's runtime (the default) or an audio-only SmallWebRTC server, which
    sends no events."""

    def __init__(
        self,
        base_url: str,
        ice_servers: list[str] | None = None,
        *,
        mic: ScriptedMicrophone | None = None,
        agent: AgentRecorder | None = None,
        event_types: frozenset[str] | None = None,
        token: str | None = None,
        signalling: Signalling = PARLEY_SIGNALLING,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.signalling = signalling
        self.token = token  # a bearer token for creating the session (runtime.md: Auth)
        self.pc = peer_connection(ice_servers or [])
        self.mic = mic or ScriptedMicrophone()
        self.agent = agent or AgentRecorder()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.session_id: str | None = None
        self.secret: str | None = None  # the session's, from the answer: it ends the session
        self.channel: RTCDataChannel | None = None
        self.disconnected = asyncio.Event()
        self._event_types = event_types
        self._changed = asyncio.Event()
        self._channel_open = asyncio.Event()
        self._connected = asyncio.Event()

    async def connect(self, timeout: float = 30.0, **fields: str) -> None:
        transceiver = self.pc.addTransceiver(self.mic, direction="sendrecv")
        # Time agent audio as it arrives, before any playout buffering (DESIGN: "received").
        set_audio_prefetch(transceiver.receiver, 0)
        if self.signalling.events_channel:
            channel = self.channel = self.pc.createDataChannel("events")
            channel.on("open", self._channel_open.set)
            channel.on("message", self._on_message)
            channel.on("close", self._on_disconnect)
        self.pc.on("track", self.agent.start)
        self.pc.on("connectionstatechange", self._on_connection_state)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(
                f"{self.base_url}{self.signalling.offer_path}",
                json={"sdp": self.pc.localDescription.sdp, "type": "offer", **fields},
                headers={"Authorization": f"Bearer {self.token}"} if self.token else {},
            )
        response.raise_for_status()
        answer = response.json()
        self.session_id = answer.get("id")
        self.secret = answer.get("secret")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        up = self._channel_open if self.signalling.events_channel else self._connected
        await asyncio.wait_for(up.wait(), timeout)

    def _on_message(self, message: str) -> None:
        event = json.loads(message)
        if self._event_types is not None and event.get("type") not in self._event_types:
            return
        self.events.append((time.monotonic(), event))
        self._changed.set()

    def _on_connection_state(self) -> None:
        if self.pc.connectionState == "connected":
            self._connected.set()
        if self.pc.connectionState in ("failed", "closed"):
            self._on_disconnect()

    def _on_disconnect(self) -> None:
        self.disconnected.set()
        self._changed.set()

    def send_client_metrics(self, **latencies_ms: float) -> bool:
        """Report latencies measured here (`v2v_ms`, `barge_in_ms`) to the runtime, which folds
        them into its SCOS percentiles. False when the channel is not open."""
        if self.channel is None or self.channel.readyState != "open":
            return False
        self.channel.send(json.dumps({"type": "client_metrics", **latencies_ms}))
        return True

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, after: float = 0.0
    ) -> tuple[float, dict[str, Any]]:
        """Wait for an event (received after `after`) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        # Events arrive in time order: start at `after`, and on each wake-up look only at
        # what is new, so long sessions do not rescan their whole history.
        index = bisect.bisect_left(self.events, after, key=lambda item: item[0])
        while True:
            while index < len(self.events):
                at, event = self.events[index]
                index += 1
                if predicate(event):
                    return at, event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching event within {timeout}s; got {self.kinds()}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_state(self, state: str, timeout: float, after: float = 0.0) -> float:
        at, _ = await self.wait_for(
            lambda e: e.get("type") == "state" and e.get("state") == state, timeout, after
        )
        return at

    def kinds(self) -> list[str]:
        return [e.get("state") or e["type"] for _, e in self.events]

    def states(self, after: float = 0.0) -> list[str]:
        return [e["state"] for at, e in self.events if e["type"] == "state" and at >= after]

    async def close(self) -> None:
        if self.session_id is not None:
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=5) as http:
                    await http.delete(
                        f"{self.base_url}/v1/sessions/{self.session_id}",
                        headers={"Authorization": f"Bearer {self.secret}"},
                    )
        await self.agent.stop()
        await self.pc.close()
