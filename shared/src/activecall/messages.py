"""Every message on the bus, as dataclasses with a versioned msgpack envelope.

Wire form: a msgpack map ``{"v": 1, "type": ..., "call_id": ..., "ts": ..., <fields>}``. A reader
that meets an unknown type or version raises :class:`UnknownMessage` (the bus counts and skips it);
fields it does not know are ignored, so a newer writer can add optional fields without breaking an
older reader. Names follow ``<Subject><Event>``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

WIRE_VERSION = 1
_ENVELOPE_KEYS = frozenset({"v", "type", "call_id", "ts"})


class MessageError(ValueError):
    """A bus entry that cannot be turned into a message."""


class UnknownMessage(MessageError):
    """The entry's type or envelope version is not one this reader knows."""


class MalformedMessage(MessageError):
    """The entry is not a msgpack map with the fields its type requires."""


_REGISTRY: dict[str, type[Message]] = {}


@dataclass(kw_only=True)
class Message:
    """Base of every bus message; subclasses set ``TYPE`` and add fields."""

    TYPE: ClassVar[str] = ""
    _FIELDS: ClassVar[tuple[str, ...]] = ()

    call_id: str = ""
    ts: float = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE:
            if cls.TYPE in _REGISTRY and _REGISTRY[cls.TYPE] is not cls:
                raise TypeError(f"message type {cls.TYPE!r} registered twice")
            _REGISTRY[cls.TYPE] = cls

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "v": WIRE_VERSION,
            "type": self.TYPE,
            "call_id": self.call_id,
            "ts": self.ts or time.time(),
        }
        for name in _field_names(type(self)):
            wire[name] = getattr(self, name)
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Message:
        if not isinstance(wire, dict):
            raise MalformedMessage("entry is not a map")
        version = wire.get("v")
        if version != WIRE_VERSION:
            raise UnknownMessage(f"unknown envelope version {version!r}")
        type_name = wire.get("type")
        target = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
        if target is None:
            raise UnknownMessage(f"unknown message type {type_name!r}")
        kwargs = {name: wire[name] for name in _field_names(target) if name in wire}
        try:
            return target(call_id=str(wire.get("call_id", "")), ts=float(wire.get("ts", 0.0)), **kwargs)
        except (TypeError, ValueError) as exc:
            raise MalformedMessage(f"{type_name}: {exc}") from None

    def encode(self) -> bytes:
        data: bytes = msgpack.packb(self.to_wire(), use_bin_type=True)
        return data


def _field_names(cls: type[Message]) -> tuple[str, ...]:
    names = cls.__dict__.get("_FIELDS")
    if not names:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in _ENVELOPE_KEYS)
        cls._FIELDS = names
    return names


def decode(data: bytes) -> Message:
    """Decode one msgpack-encoded envelope."""
    try:
        wire = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise MalformedMessage(f"not msgpack: {exc}") from None
    return Message.from_wire(wire)


def known_types() -> dict[str, type[Message]]:
    return dict(_REGISTRY)


# ------------------------------------------------------------------ call lifecycle (call:{id}:events)


@dataclass(kw_only=True)
class CallStateChanged(Message):
    TYPE: ClassVar[str] = "call.state"
    state: str
    previous: str = ""
    reason: str = ""


@dataclass(kw_only=True)
class CallAnswered(Message):
    TYPE: ClassVar[str] = "call.answered"
    direction: str
    caller: str = ""
    callee: str = ""
    playbook: str = ""
    sample_rate: int = 8000


@dataclass(kw_only=True)
class CallEnded(Message):
    TYPE: ClassVar[str] = "call.ended"
    reason: str = ""
    by: str = ""
    status: int = 0


@dataclass(kw_only=True)
class SpeechStarted(Message):
    TYPE: ClassVar[str] = "speech.started"
    at_ms: int = 0


@dataclass(kw_only=True)
class SpeechStopped(Message):
    TYPE: ClassVar[str] = "speech.stopped"
    at_ms: int = 0


@dataclass(kw_only=True)
class TranscriptPartial(Message):
    TYPE: ClassVar[str] = "transcript.partial"
    text: str
    start_ms: int = 0
    end_ms: int = 0


@dataclass(kw_only=True)
class TranscriptFinal(Message):
    """The caller's turn ended and this is what was said. An empty ``text`` is sound without words (a
    cough, noise, a word the recognizer could not make out).

    ``speech_end_ms`` is the end of the caller's last speech frame on the media clock (the ``at_ms``
    of ``audio:in``); ``decided_ts`` the wall time at which the end of the turn was decided, and
    ``eot`` how: ``complete`` (a finished sentence after a short silence), ``incomplete`` (an
    unfinished one, after the longer wait), ``silence`` (silence alone) or ``hangup``."""

    TYPE: ClassVar[str] = "transcript.final"
    text: str
    start_ms: int = 0
    end_ms: int = 0
    confidence: float = 0.0
    utterance: int = 0
    speech_end_ms: int = 0
    decided_ts: float = 0.0
    eot: str = ""


@dataclass(kw_only=True)
class TurnStarted(Message):
    TYPE: ClassVar[str] = "turn.started"
    turn_id: str
    text: str = ""


@dataclass(kw_only=True)
class TurnCancelled(Message):
    TYPE: ClassVar[str] = "turn.cancelled"
    turn_id: str
    reason: str = ""


@dataclass(kw_only=True)
class PlaybackStarted(Message):
    """The first packet of a turn left; ``latency_ms`` is the time since the caller stopped speaking
    (0 when the turn does not answer speech)."""

    TYPE: ClassVar[str] = "playback.started"
    turn_id: str
    latency_ms: int = 0


@dataclass(kw_only=True)
class PlaybackFinished(Message):
    TYPE: ClassVar[str] = "playback.finished"
    turn_id: str
    played_ms: int = 0


@dataclass(kw_only=True)
class PlaybackPaused(Message):
    """The caller spoke over the playing turn: the media worker paused it after ``played_ms`` and
    waits for ``playback.resume`` (a backchannel, a cough) or ``playback.stop`` (real words)."""

    TYPE: ClassVar[str] = "playback.paused"
    turn_id: str
    played_ms: int = 0


@dataclass(kw_only=True)
class PlaybackResumed(Message):
    TYPE: ClassVar[str] = "playback.resumed"
    turn_id: str
    played_ms: int = 0


@dataclass(kw_only=True)
class TurnTimings(Message):
    """Where the time of one answer went: each stage in milliseconds after the end of the caller's
    last speech frame (or key press), ``first_packet`` being the turn latency the caller hears."""

    TYPE: ClassVar[str] = "turn.timings"
    turn_id: str
    kind: str = ""
    stages: dict[str, int] = field(default_factory=dict)


@dataclass(kw_only=True)
class BargeIn(Message):
    TYPE: ClassVar[str] = "barge_in"
    turn_id: str
    played_ms: int


@dataclass(kw_only=True)
class DtmfReceived(Message):
    TYPE: ClassVar[str] = "dtmf"
    digit: str
    duration_ms: int = 0


@dataclass(kw_only=True)
class MediaTimeout(Message):
    TYPE: ClassVar[str] = "media.timeout"
    idle_s: float = 0.0


@dataclass(kw_only=True)
class TransferRequested(Message):
    TYPE: ClassVar[str] = "transfer.requested"
    target: str
    by: str = ""


@dataclass(kw_only=True)
class CallError(Message):
    TYPE: ClassVar[str] = "call.error"
    source: str
    error: str


# ------------------------------------------------------------------ audio and text


@dataclass(kw_only=True)
class AudioFrame(Message):
    """Caller audio on ``call:{id}:audio:in``: PCM16 mono little-endian."""

    TYPE: ClassVar[str] = "audio.frame"
    pcm: bytes
    sample_rate: int = 8000
    seq: int = 0
    at_ms: int = 0


@dataclass(kw_only=True)
class AudioChunk(Message):
    """Agent audio on ``call:{id}:audio:out``; ``last`` closes the turn. A turn whose first chunk is
    not ``interruptible`` plays out whatever the caller says."""

    TYPE: ClassVar[str] = "audio.chunk"
    turn_id: str
    seq: int
    pcm: bytes = b""
    sample_rate: int = 8000
    last: bool = False
    interruptible: bool = True


@dataclass(kw_only=True)
class SayText(Message):
    """Text to speak on ``call:{id}:say``; ``last`` closes the turn; ``interruptible`` goes on to
    the turn's audio."""

    TYPE: ClassVar[str] = "say"
    turn_id: str
    seq: int
    text: str = ""
    last: bool = False
    interruptible: bool = True


# ------------------------------------------------------------------ sessions (sessions:{role})


@dataclass(kw_only=True)
class SessionStart(Message):
    TYPE: ClassVar[str] = "session.start"
    role: str
    playbook: str = ""
    sample_rate: int = 8000
    variables: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ media control (media:{worker}:control)


@dataclass(kw_only=True)
class LegOpen(Message):
    TYPE: ClassVar[str] = "leg.open"
    leg_id: str
    srtp: bool = False
    rtcp_mux: bool = False
    reply_to: str = ""


@dataclass(kw_only=True)
class LegOpened(Message):
    TYPE: ClassVar[str] = "leg.opened"
    leg_id: str
    worker: str
    address: str
    port: int
    crypto_suite: str = ""
    crypto_key: str = ""
    error: str = ""


@dataclass(kw_only=True)
class LegUpdate(Message):
    TYPE: ClassVar[str] = "leg.update"
    leg_id: str
    remote_address: str = ""
    remote_port: int = 0
    payload_type: int = 0
    codec: str = "PCMU"
    telephone_event_pt: int = 0
    ptime: int = 20
    direction: str = "sendrecv"
    remote_crypto_suite: str = ""
    remote_crypto_key: str = ""
    reply_to: str = ""


@dataclass(kw_only=True)
class LegClose(Message):
    TYPE: ClassVar[str] = "leg.close"
    leg_id: str
    reply_to: str = ""


@dataclass(kw_only=True)
class Ack(Message):
    """Generic answer to a request that only needs success or an error."""

    TYPE: ClassVar[str] = "ack"
    ok: bool = True
    error: str = ""


@dataclass(kw_only=True)
class SendDtmf(Message):
    TYPE: ClassVar[str] = "dtmf.send"
    digits: str
    duration_ms: int = 160


@dataclass(kw_only=True)
class StopPlayback(Message):
    """Stop a turn (empty: every turn). ``reason`` ``barge_in`` cuts a paused turn as a barge-in
    (``barge_in`` with the milliseconds played, then ``turn.cancelled``); any other reason is a plain
    stop."""

    TYPE: ClassVar[str] = "playback.stop"
    turn_id: str = ""
    reason: str = ""


@dataclass(kw_only=True)
class ResumePlayback(Message):
    """Play a paused turn on from where it paused."""

    TYPE: ClassVar[str] = "playback.resume"
    turn_id: str = ""


@dataclass(kw_only=True)
class BargeInPolicy(Message):
    """The playbook's ``interruption`` for a call's leg: whether caller speech or a key press cuts the
    playing turn, and the guard and minimum speech times (-1 keeps the worker's ``[media]`` setting)."""

    TYPE: ClassVar[str] = "barge_in.policy"
    enabled: bool = True
    guard_ms: int = -1
    min_speech_ms: int = -1


@dataclass(kw_only=True)
class StartRecording(Message):
    TYPE: ClassVar[str] = "recording.start"
    path: str = ""


# ------------------------------------------------------------------ edge control


@dataclass(kw_only=True)
class Hangup(Message):
    TYPE: ClassVar[str] = "call.hangup"
    reason: str = ""
    by: str = ""


@dataclass(kw_only=True)
class Transfer(Message):
    TYPE: ClassVar[str] = "call.transfer"
    target: str


@dataclass(kw_only=True)
class Originate(Message):
    TYPE: ClassVar[str] = "call.originate"
    callee: str
    caller: str = ""
    playbook: str = ""
    username: str = ""
    password: str = ""
    realm: str = ""
    enable_srtp: bool | None = None
    headers: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    ring_timeout: float = 60.0


@dataclass(kw_only=True)
class Probe(Message):
    """A numbered message for bus checks, benchmarks and the session failover test worker."""

    TYPE: ClassVar[str] = "probe"
    seq: int
    payload: bytes = b""
    worker: str = ""


@dataclass(kw_only=True)
class PlayAudio(Message):
    """Play a file (relative to the media worker's audio directory) or an http(s) URL into the call."""

    TYPE: ClassVar[str] = "playback.play"
    path_or_url: str
    turn_id: str = ""


@dataclass(kw_only=True)
class SaySynthesized(Message):
    """tts on ``call:{id}:events``: one ``say`` piece became ``duration_ms`` of audio. The llm maps a
    barge-in's ``played_ms`` onto the turn's text with it."""

    TYPE: ClassVar[str] = "say.synthesized"
    turn_id: str
    seq: int
    duration_ms: int
    chars: int = 0
