"""One peer connection with the other unit: media both ways, the ``emotion`` channel, the heartbeat.

The heartbeat exists because aiortc notices a vanished peer only after about 27 s (its consent
check), and then says "closed", not "failed": each side sends one every ``heartbeat_seconds`` and
counts the other as lost after ``peer_timeout_seconds`` without hearing anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from appliance.audio import Speaker
from appliance.call import messages
from appliance.call.media import (
    AudioInput,
    AudioInputTrack,
    CaptureTrack,
    FrameSink,
    ReceivedMedia,
    play_remote_audio,
    play_remote_video,
)
from appliance.camera.capture import Capture
from appliance.config import CallConfig

log = logging.getLogger(__name__)

WATCH_PERIOD = 0.25
# How long a close is waited for; the rest goes on by itself. What takes longer is a TURN
# allocation's release, which aioice retries for about a minute when the network is down: the call's
# recovery, the next call and idle all waited for it.
CLOSE_WAIT_SECONDS = 2.0


class SessionListener(Protocol):
    """Told what happens to a session (the call state machine)."""

    def on_open(self, session: Session) -> None: ...

    def on_message(self, session: Session, message: messages.Message) -> None: ...

    def on_lost(self, session: Session, reason: str) -> None: ...


class Session:
    def __init__(
        self,
        cfg: CallConfig,
        capture: Capture,
        audio_input: AudioInput,
        *,
        speaker: Speaker,
        on_frame: FrameSink,
        listener: SessionListener,
        ice_servers: Sequence[RTCIceServer] = (),
    ) -> None:
        self._cfg, self._speaker, self._on_frame, self._listener = cfg, speaker, on_frame, listener
        servers = [RTCIceServer(url.strip()) for url in cfg.ice_servers.split(",") if url.strip()]
        servers += ice_servers  # the relay's STUN/TURN, with time-limited credentials (appliance/relay)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._tracks: list[MediaStreamTrack] = [
            CaptureTrack(capture, cfg.width, cfg.height, cfg.fps),
            AudioInputTrack(audio_input),
        ]
        self.received = ReceivedMedia()
        self._tasks: set[asyncio.Task[None]] = set()
        self._heard = time.monotonic()
        self._heartbeats = 0
        self._lost = False
        self._closing: asyncio.Task[None] | None = None
        self.channel: Any = None
        self.opened = asyncio.Event()
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def offer(self) -> str:
        self._add_media()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    async def answer(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        self._add_media()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    def _add_media(self) -> None:
        # Negotiated with a fixed id, so both ends have the channel without waiting for an announcement.
        self.channel = self.pc.createDataChannel("emotion", negotiated=True, id=0)
        self.channel.on("open", self._opened)
        self.channel.on("message", self._on_raw)
        for track in self._tracks:
            self.pc.addTrack(track)
        codecs = RTCRtpSender.getCapabilities("video").codecs
        preferred = [c for c in codecs if c.mimeType == f"video/{self._cfg.codec}"]
        rest = [c for c in codecs if c not in preferred]
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.setCodecPreferences(preferred + rest)

    def send(self, message: messages.Message) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(messages.encode(message))

    @property
    def is_open(self) -> bool:
        return self.channel is not None and self.channel.readyState == "open"

    @property
    def silent_for(self) -> float:
        """Seconds since the other side was last heard on the channel (since it opened)."""
        return time.monotonic() - self._heard

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _opened(self) -> None:
        self._heard = time.monotonic()
        self._spawn(self._heartbeat())
        self.opened.set()
        self._listener.on_open(self)

    def _on_raw(self, raw: str | bytes) -> None:
        try:
            message = messages.parse(raw)
        except messages.MessageError as e:
            log.warning("dropped a data channel message: %s", e)
            return
        self._heard = time.monotonic()
        if not isinstance(message, messages.Heartbeat):
            self._listener.on_message(self, message)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            self._spawn(play_remote_video(track, self._on_frame, self.received))
        else:
            self._spawn(play_remote_audio(track, self._speaker, self.received))

    def _on_connection_state(self) -> None:
        if self.pc.connectionState == "failed":
            self._lose("the connection failed")

    def _lose(self, reason: str) -> None:
        if not self._lost:
            self._lost = True
            self._listener.on_lost(self, reason)

    async def _heartbeat(self) -> None:
        next_beat = 0.0
        while not self._lost:
            now = time.monotonic()
            if now >= next_beat:
                self.send(messages.Heartbeat(seq=self._heartbeats))
                self._heartbeats += 1
                next_beat = now + self._cfg.heartbeat_seconds
            if now - self._heard > self._cfg.peer_timeout_seconds:
                self._lose(f"nothing heard for {now - self._heard:.1f} s")
            await asyncio.sleep(WATCH_PERIOD)

    async def close(self) -> None:
        """Close it to its end, waiting at most CLOSE_WAIT_SECONDS. Safe to call again (every caller
        waits for the one close) and to cancel: a cancelled caller stops waiting, the close goes on
        (a half-closed peer connection would keep sending media and checking consent, and its own
        close would then wait forever)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())
            self._closing.add_done_callback(_log_failed_close)
        try:
            await asyncio.wait_for(asyncio.shield(self._closing), CLOSE_WAIT_SECONDS)
        except TimeoutError:
            log.info("the call's connection is still closing (a TURN allocation's release?): going on")

    async def _close(self) -> None:
        self._lost = True  # a closing session is never reported lost
        for track in self._tracks:
            track.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()


def _log_failed_close(closing: asyncio.Task[None]) -> None:
    """A close that failed after its callers went on is logged, not left unretrieved."""
    if not closing.cancelled() and closing.exception() is not None:
        log.warning("closing the call's connection failed: %s", closing.exception())
