"""Sessions: one WebRTC peer connection and one conversation each, under a cap, reaped when
the client goes away.

The manager answers offers, keeps the registry, and runs a reaper that closes sessions whose
peer never connected, whose connection failed, whose inbound audio stopped arriving, or that
could not process their inbound audio for a second (`InboundFaults`). Closing a session
cancels its tasks, waits for them to finish, stops its tracks and drops its model state.

Admission: a new session needs a free slot under the cap the backpressure level allows
(`admission_cap`), and the pod not draining. The manager keeps the pod's session counts
(admitted, rejected by reason, cut) and frame counts for the signals, and drains: it stops
admitting, waits for live sessions to end, and cuts (closes and counts) those still there
when the grace period is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCDataChannel, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from parley.pcm import INPUT_RATE, Resampler
from parley.security.tokens import new_secret, same_secret
from parley_runtime.agent import Conversation, Services
from parley_runtime.audio import AgentAudioOutput
from parley_runtime.config import RuntimeSettings
from parley_runtime.events import EVENTS_LABEL, EventChannel
from parley_runtime.signals import PodCounts, RuntimeMetrics
from parley_runtime.telemetry import ConversationObserver
from parley_runtime.visuals import VisemeAnimator
from parley_runtime.webrtc import peer_connection, set_audio_prefetch

log = logging.getLogger(__name__)


class OfferError(ValueError):
    """The SDP offer cannot be used (malformed, no audio)."""


class CapacityError(RuntimeError):
    """The pod is not admitting: `reason` is capacity, backpressure or draining."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


#: Client messages on the events channel larger than this are ignored unread.
_MAX_CLIENT_MESSAGE = 4096
#: The reap reason of a session that gave up on its inbound audio.
AUDIO_FAILED = "audio processing failed"


class FrameFault(Enum):
    """What to do about one inbound frame that could not be processed."""

    LOG = "log"  # log it, with its traceback
    COUNT = "count"  # count it, say nothing
    GIVE_UP = "give_up"  # the session can no longer hear its user: end it


@dataclass
class InboundFaults:
    """Failures of the inbound audio path, in frames (pure: no clock, no I/O).

    One frame that fails is lost and the conversation goes on. The first failure is logged
    with its traceback, then one in every `log_every`, so a persistent fault cannot flood the
    log (aiortc delivers a frame every 20 ms). `give_up_after` failures in a row (about a
    second of audio) mean the fault is not going away: the user would be talking to an agent
    that cannot hear them.
    """

    give_up_after: int = 50
    log_every: int = 500
    in_a_row: int = 0
    total: int = 0
    logged_in_run: bool = False

    def failed(self) -> FrameFault:
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.give_up_after:
            return FrameFault.GIVE_UP
        if (self.total - 1) % self.log_every == 0:
            self.logged_in_run = True
            return FrameFault.LOG
        return FrameFault.COUNT

    def recovered(self) -> int:
        """A frame went through after failures: the length of the run of failures it ends if
        that run was logged (its end is worth a line too), else 0."""
        run = self.in_a_row if self.logged_in_run else 0
        self.in_a_row, self.logged_in_run = 0, False
        return run


@dataclass
class SessionInfo:
    id: str
    state: str
    connection: str
    turns: int
    age_s: float

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Session:
    def __init__(
        self,
        services: Services,
        settings: RuntimeSettings,
        observers: list[ConversationObserver],
        system_prompt: str | None,
        voice: str | None,
        visuals_enabled: Callable[[], bool] = lambda: True,
    ) -> None:
        self.id = uuid.uuid4().hex
        #: Given to the client once, at creation: it may end (and read) this session with it.
        self.secret = new_secret()
        self.created_at = time.monotonic()
        #: When the answer left; the client's audio is due soon after (`connect_timeout_s`).
        self.answered_at: float | None = None
        self.last_audio_at: float | None = None
        self.pc = peer_connection(settings.ice_servers)
        self._prefetch = settings.jitter_prefetch_frames
        self.output = AgentAudioOutput()
        self.events = EventChannel()
        self.visuals = VisemeAnimator(self.events.send, visuals_enabled)
        self.output.add_frame_listener(self.visuals.on_frame)
        self.conversation = Conversation(
            services, settings, self.output, self.events, observers, system_prompt, voice
        )
        self._reader: asyncio.Task[None] | None = None
        #: Why the session cannot go on (it then waits for the reaper), if it cannot.
        self.failure: str | None = None
        self.closed = asyncio.Event()
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def answer(self, offer_sdp: str) -> str:
        if "m=audio" not in offer_sdp:
            raise OfferError("the offer has no audio section (m=audio)")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except Exception as exc:
            raise OfferError(f"malformed SDP offer: {exc}") from exc
        audio = [t for t in self.pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise OfferError("the offer has no usable audio section")
        set_audio_prefetch(audio[0].receiver, self._prefetch)
        audio[0].sender.replaceTrack(self.output)
        audio[0].direction = "sendrecv"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.conversation.start()
        self.answered_at = time.monotonic()
        return self.pc.localDescription.sdp

    def owned_by(self, presented: str | None) -> bool:
        """Whether `presented` is this session's secret (compared in constant time)."""
        return same_secret(presented, self.secret)

    def info(self) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            state=self.conversation.state.value,
            connection=self.pc.connectionState,
            turns=self.conversation.turns,
            age_s=round(time.monotonic() - self.created_at, 1),
        )

    def stale_reason(self, settings: RuntimeSettings, now: float) -> str | None:
        if self.failure is not None:
            return self.failure
        state = self.pc.connectionState
        if state in ("failed", "closed"):
            return f"connection {state}"
        if self.last_audio_at is None:
            # An offer that never connects holds a slot of the cap only this long.
            if self.answered_at is not None and now - self.answered_at > settings.connect_timeout_s:
                return "never connected"
        elif now - self.last_audio_at > settings.idle_timeout_s:
            return "no inbound audio"
        return None

    async def close(self) -> None:
        """Close everything; the client gets `state: ended` first when it can. The track
        and the peer connection are closed even if closing the conversation fails."""
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            await self.conversation.close()
            await self.events.flushed()
        finally:
            self.output.stop()
            await self.pc.close()

    # -- aiortc callbacks -----------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.create_task(self._read(track), name=f"read-{self.id[:8]}")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == EVENTS_LABEL:
            self.events.attach(channel)
            channel.on("message", self._on_client_message)

    def _on_client_message(self, message: object) -> None:
        """The client may report its own latencies (`client_metrics`); nothing else is read."""
        if not isinstance(message, str) or len(message) > _MAX_CLIENT_MESSAGE:
            return
        try:
            event = json.loads(message)
        except json.JSONDecodeError:
            return
        if isinstance(event, dict) and event.get("type") == "client_metrics":
            self.conversation.client_report(event)

    async def _on_connection_state(self) -> None:
        log.info("session %s: connection %s", self.id[:8], self.pc.connectionState)

    async def _read(self, track: MediaStreamTrack) -> None:
        resampler = Resampler(INPUT_RATE)
        faults = InboundFaults()
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                self.last_audio_at = time.monotonic()
                try:
                    self.conversation.feed(resampler.frame(frame))
                except Exception as exc:  # a bad frame is dropped; a fault that persists ends it
                    if not self._frame_failed(faults, exc):
                        return
                else:
                    if faults.in_a_row and (run := faults.recovered()):
                        log.warning(
                            "session %s: inbound audio recovered after %d failed frames",
                            self.id[:8],
                            run,
                        )
        except MediaStreamError:
            log.info("session %s: inbound audio ended", self.id[:8])

    def _frame_failed(self, faults: InboundFaults, exc: Exception) -> bool:
        """Act on one failed inbound frame; False once the session has given up on them."""
        fault = faults.failed()
        if fault is FrameFault.LOG:
            log.error(
                "session %s: processing inbound audio failed (%d frames so far)",
                self.id[:8],
                faults.total,
                exc_info=exc,
            )
        elif fault is FrameFault.GIVE_UP:
            log.error(
                "session %s: inbound audio failed %d frames in a row (last: %r); ending it",
                self.id[:8],
                faults.in_a_row,
                exc,
            )
            self.failure = AUDIO_FAILED
            self.conversation.report_error(
                "audio_failed",
                "the agent can no longer process your audio, so this session is ending; "
                "please reconnect",
            )
            return False
        return True


class SessionManager:
    def __init__(
        self,
        services: Services,
        settings: RuntimeSettings,
        observers: list[ConversationObserver],
        metrics: RuntimeMetrics,
        admission_cap: Callable[[int], int] = lambda capacity: capacity,
        visuals_enabled: Callable[[], bool] = lambda: True,
    ) -> None:
        self._services = services
        self._settings = settings
        self._observers = observers
        self._metrics = metrics
        self._admission_cap = admission_cap
        self._visuals_enabled = visuals_enabled
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.admitted = 0
        self.rejected = 0
        self.cut = 0
        self._closed_frames = (0, 0)  # (sent, late) of sessions already closed
        self._reaper: asyncio.Task[None] | None = None
        self._emptied = asyncio.Event()
        metrics.sessions_capacity.set(self.capacity)

    @property
    def capacity(self) -> int:
        return self._settings.max_sessions

    def admission_cap(self) -> int:
        return 0 if self.draining else min(self.capacity, self._admission_cap(self.capacity))

    async def create(
        self, offer_sdp: str, system_prompt: str | None = None, voice: str | None = None
    ) -> tuple[Session, str]:
        self._admit()
        session = Session(
            self._services,
            self._settings,
            self._observers,
            system_prompt,
            voice,
            self._visuals_enabled,
        )
        self.sessions[session.id] = session
        self._emptied.clear()
        try:
            answer = await session.answer(offer_sdp)
        except BaseException:
            await self.remove(session.id)
            raise
        self.admitted += 1
        self._metrics.sessions_admitted.inc()
        self._metrics.sessions_active.set(len(self.sessions))
        return session, answer

    def _admit(self) -> None:
        """Raise `CapacityError` unless a new session may start now."""
        if self.draining:
            reason, message = "draining", "the pod is draining"
        elif len(self.sessions) >= self.capacity:
            reason, message = "capacity", f"at capacity ({self.capacity} sessions)"
        elif len(self.sessions) >= (cap := self.admission_cap()):
            reason, message = "backpressure", f"under load: admitting {cap} sessions for now"
        else:
            return
        self.rejected += 1
        self._metrics.sessions_rejected.labels(reason).inc()
        raise CapacityError(reason, message)

    def counts(self) -> PodCounts:
        sent, late = self._closed_frames
        for session in self.sessions.values():
            sent += session.output.frames_sent
            late += session.output.late_frames
        return PodCounts(
            active=len(self.sessions),
            capacity=self.capacity,
            admitted_total=self.admitted,
            rejected_total=self.rejected,
            cut_total=self.cut,
            frames_sent_total=sent,
            frames_late_total=late,
            draining=self.draining,
            ready=not self.draining,
        )

    # -- drain ----------------------------------------------------------------------------

    def drain(self) -> None:
        """Stop admitting; live sessions go on."""
        if not self.draining:
            log.warning("draining: admitting no new sessions; %d live", len(self.sessions))
        self.draining = True
        self._metrics.draining.set(1)

    def undrain(self) -> None:
        if self.draining:
            log.warning("drain cancelled: admitting sessions again")
        self.draining = False
        self._metrics.draining.set(0)

    async def wait_empty(self, timeout_s: float) -> bool:
        """Wait until no session is left; False if `timeout_s` passed first."""
        if not self.sessions:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._emptied.wait()
        except TimeoutError:
            return False
        return True

    async def cut_all(self, why: str) -> int:
        """Close every live session (their clients are still there) and count them as cut."""
        cut = list(self.sessions)
        for session_id in cut:
            log.warning("cutting session %s: %s", session_id[:8], why)
            await self.remove(session_id)
        self.cut += len(cut)
        self._metrics.sessions_cut.inc(len(cut))
        return len(cut)

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    async def remove(self, session_id: str) -> bool:
        """Take a session out of the registry and close it. One that fails to close is gone
        all the same (logged): nothing could close it later."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        try:
            await session.close()
        except Exception:
            log.exception("session %s failed to close", session_id[:8])
        sent, late = self._closed_frames
        self._closed_frames = (sent + session.output.frames_sent, late + session.output.late_frames)
        self._metrics.sessions_active.set(len(self.sessions))
        if not self.sessions:
            self._emptied.set()
        return True

    def start_reaper(self, interval_s: float = 1.0) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(interval_s), name="reaper")

    async def _reap_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._reap(time.monotonic())

    async def _reap(self, now: float) -> None:
        """Close the sessions that are stale at `now`. Whatever goes wrong with one is logged
        and the others are still reaped, now and at every later round."""
        for session in list(self.sessions.values()):
            try:
                reason = session.stale_reason(self._settings, now)
                if reason is not None:
                    log.info("reaping session %s: %s", session.id[:8], reason)
                    await self.remove(session.id)
                    self._metrics.sessions_reaped.labels(reason).inc()
            except Exception:
                log.exception("reaping session %s failed; the reaper goes on", session.id[:8])

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session_id in list(self.sessions):
            await self.remove(session_id)
