"""Every message on the bus, as typed structures with a versioned msgpack envelope.

Wire form: a msgpack map ``{"type": ..., "v": 1, "call_id": ..., "ts": ..., <fields>}``. Each message
class names its ``TYPE`` (the ``type`` of its entries) and the streams it travels on (``STREAMS``, see
:class:`~activecall.contract.Stream`). One encoder writes every message and one decoder reads every
entry, checking each field's type as it goes:

- an unknown ``type`` or ``v`` raises :class:`UnknownMessage` (the bus counts and skips the entry);
- a field of the wrong type, a missing required field or an entry that is not a map raises
  :class:`MalformedMessage` (counted and skipped too);
- fields the reader does not know are ignored, so a newer writer can add optional fields without
  breaking an older reader.

Class names follow ``<Subject><Event>``. Type names are ``<subject>.<event>`` in lower case (``call.state``,
``playback.stop``); a few older ones are one word (``say``, ``dtmf``, ``ack``, ``probe``) or
underscored (``barge_in``, ``barge_in.policy``). Type names are the wire contract: they stay as they are.

The constructors do not check types (a producer's mistakes are mypy's to find); the decoder does.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Final, Union

import msgspec

from activecall.contract import CallState, Direction, MediaDirection, Stream

WIRE_VERSION: Final = 1


class MessageError(ValueError):
    """A bus entry that cannot be turned into a message."""


class UnknownMessage(MessageError):
    """The entry's type or envelope version is not one this reader knows."""


class MalformedMessage(MessageError):
    """The entry is not a msgpack map with the fields its type requires, of the types it declares."""


_REGISTRY: dict[str, type[Message]] = {}
_TYPE_OF_CLASS: dict[str, str] = {}


def _wire_type(class_name: str) -> str:
    """The msgspec tag of a message class: the ``TYPE`` it declared (the base's is empty)."""
    if class_name == "Message":
        return ""
    try:
        return _TYPE_OF_CLASS[class_name]
    except KeyError:
        raise TypeError(f"message class {class_name} declares no TYPE") from None


# gc=False: a message holds strings, numbers, bytes and flat maps, never a reference cycle, so the
# garbage collector need not track the thousands decoded every second.
class Message(msgspec.Struct, kw_only=True, tag_field="type", tag=_wire_type, gc=False):
    """Base of every bus message. A subclass sets ``TYPE`` and ``STREAMS``, declares its fields, and is
    declared ``kw_only=True`` so that its fields follow the envelope's and are named when built."""

    TYPE: ClassVar[str] = ""
    STREAMS: ClassVar[tuple[Stream, ...]] = ()

    v: int = WIRE_VERSION
    call_id: str = ""
    ts: float = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Runs before msgspec asks _wire_type for the class's tag.
        super().__init_subclass__(**kwargs)
        type_name = cls.__dict__.get("TYPE", "")
        if not type_name:
            raise TypeError(f"message class {cls.__name__} declares no TYPE")
        if type_name in _REGISTRY or cls.__name__ in _TYPE_OF_CLASS:
            raise TypeError(f"message type {type_name!r} registered twice")
        _TYPE_OF_CLASS[cls.__name__] = type_name
        _REGISTRY[type_name] = cls
        _codec.forget()

    def encode(self) -> bytes:
        """The msgpack envelope; a message without ``ts`` is stamped with the time it is first encoded."""
        if not self.ts:
            self.ts = time.time()
        return _codec.encoder.encode(self)

    def to_wire(self) -> dict[str, Any]:
        """The envelope and fields as a map, values as they are (bytes stay bytes)."""
        return {"type": self.TYPE, **msgspec.structs.asdict(self)}


class _Codec:
    """The encoder and the decoder of every registered message type, the decoder rebuilt when a type
    is added."""

    def __init__(self) -> None:
        self.encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Message] | None = None

    def forget(self) -> None:
        self._decoder = None

    @property
    def decoder(self) -> msgspec.msgpack.Decoder[Message]:
        if self._decoder is None:
            union: Any = Union[tuple(_REGISTRY.values())]  # noqa: UP007  # built at run time
            self._decoder = msgspec.msgpack.Decoder(union)
        return self._decoder


_codec = _Codec()


def decode(data: bytes) -> Message:
    """Decode one msgpack-encoded envelope, checking every field against its declared type."""
    try:
        message = _codec.decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise _rejection(data, exc) from None
    if message.v != WIRE_VERSION:
        raise UnknownMessage(f"unknown envelope version {message.v!r}")
    return message


def _rejection(data: bytes, error: msgspec.DecodeError) -> MessageError:
    """Why an entry was refused: an unknown type or version, or a malformed entry."""
    try:
        wire = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return MalformedMessage(f"not msgpack: {error}")
    if not isinstance(wire, dict):
        return MalformedMessage("entry is not a map")
    version = wire.get("v", WIRE_VERSION)
    if version != WIRE_VERSION:
        return UnknownMessage(f"unknown envelope version {version!r}")
    type_name = wire.get("type")
    if not isinstance(type_name, str) or type_name not in _REGISTRY:
        return UnknownMessage(f"unknown message type {type_name!r}")
    return MalformedMessage(f"{type_name}: {error}")


def known_types() -> dict[str, type[Message]]:
    return dict(_REGISTRY)


# ------------------------------------------------------------------ call lifecycle (call:{id}:events)

_EVENTS: Final = (Stream.EVENTS,)


class CallStateChanged(Message, kw_only=True):
    """The call moved to ``state`` from ``previous`` (a :class:`CallState` value, empty for the first
    state the api writes); ``reason`` says why in free text."""

    TYPE = "call.state"
    STREAMS = _EVENTS
    state: CallState
    previous: str = ""
    reason: str = ""


class CallAnswered(Message, kw_only=True):
    TYPE = "call.answered"
    STREAMS = _EVENTS
    direction: Direction
    caller: str = ""
    callee: str = ""
    playbook: str = ""
    sample_rate: int = 8000


class CallEnded(Message, kw_only=True):
    """The call is over: ``reason`` (an :class:`~activecall.contract.EndReason` value or free text),
    ``by`` whom (``remote``, ``local``, ``api``, ``llm``, ``media``, ``timeout``, ``reaper``), the SIP
    ``status``."""

    TYPE = "call.ended"
    STREAMS = (Stream.EVENTS, Stream.PROBE_IN)
    reason: str = ""
    by: str = ""
    status: int = 0


class SpeechStarted(Message, kw_only=True):
    TYPE = "speech.started"
    STREAMS = _EVENTS
    at_ms: int = 0


class SpeechStopped(Message, kw_only=True):
    TYPE = "speech.stopped"
    STREAMS = _EVENTS
    at_ms: int = 0


class TranscriptPartial(Message, kw_only=True):
    """The words heard so far in the caller's turn; ``start_ms`` and ``end_ms`` on the media clock."""

    TYPE = "transcript.partial"
    STREAMS = _EVENTS
    text: str
    start_ms: int = 0
    end_ms: int = 0


class TranscriptFinal(Message, kw_only=True):
    """The caller's turn ended and this is what was said. An empty ``text`` is sound without words (a
    cough, noise, a word the recognizer could not make out).

    ``start_ms`` and ``end_ms`` are where the recognized words lie, and ``speech_end_ms`` is the end of
    the caller's last speech frame, on the media clock (the ``at_ms`` of ``audio:in``);
    ``decided_ts`` the wall time at which the end of the turn was decided, and ``eot`` how: ``complete``
    (a finished sentence after a short silence), ``incomplete`` (an unfinished one, after the longer
    wait), ``silence`` (silence alone) or ``hangup``; ``p_finished`` the judge's probability that the
    sentence was finished, when a judge was asked.

    ``reply_at_ms`` (media clock; 0: at once) is set when the turn was ended early, at the pause
    (``[asr] preemptive``): the reply is prepared at once but its audio must not reach the caller
    before the silence the verdict asked for has passed. Speech that resumes before then starts a
    new turn, which the reply is merged with."""

    TYPE = "transcript.final"
    STREAMS = _EVENTS
    text: str
    start_ms: int = 0
    end_ms: int = 0
    confidence: float = 0.0
    utterance: int = 0
    speech_end_ms: int = 0
    decided_ts: float = 0.0
    eot: str = ""
    p_finished: float | None = None
    reply_at_ms: int = 0


class TurnStarted(Message, kw_only=True):
    TYPE = "turn.started"
    STREAMS = _EVENTS
    turn_id: str
    text: str = ""


class TurnCancelled(Message, kw_only=True):
    TYPE = "turn.cancelled"
    STREAMS = _EVENTS
    turn_id: str
    reason: str = ""


class PlaybackStarted(Message, kw_only=True):
    """The first packet of a turn left; ``latency_ms`` is the time since the caller stopped speaking
    (0 when the turn does not answer speech)."""

    TYPE = "playback.started"
    STREAMS = _EVENTS
    turn_id: str
    latency_ms: int = 0


class PlaybackFinished(Message, kw_only=True):
    TYPE = "playback.finished"
    STREAMS = _EVENTS
    turn_id: str
    played_ms: int = 0


class PlaybackPaused(Message, kw_only=True):
    """The caller spoke over the playing turn: the media worker paused it after ``played_ms`` and
    waits for ``playback.resume`` (a backchannel, a cough) or ``playback.stop`` (real words)."""

    TYPE = "playback.paused"
    STREAMS = _EVENTS
    turn_id: str
    played_ms: int = 0


class PlaybackResumed(Message, kw_only=True):
    TYPE = "playback.resumed"
    STREAMS = _EVENTS
    turn_id: str
    played_ms: int = 0


class TurnTimings(Message, kw_only=True):
    """Where the time of one answer went: each stage in milliseconds after the end of the caller's
    last speech frame (or key press), ``first_packet`` being the turn latency the caller hears."""

    TYPE = "turn.timings"
    STREAMS = _EVENTS
    turn_id: str
    kind: str = ""
    stages: dict[str, int] = msgspec.field(default_factory=dict)


class BargeIn(Message, kw_only=True):
    TYPE = "barge_in"
    STREAMS = _EVENTS
    turn_id: str
    played_ms: int


class DtmfReceived(Message, kw_only=True):
    TYPE = "dtmf"
    STREAMS = _EVENTS
    digit: str
    duration_ms: int = 0


class MediaTimeout(Message, kw_only=True):
    TYPE = "media.timeout"
    STREAMS = _EVENTS
    idle_s: float = 0.0


class MediaMoved(Message, kw_only=True):
    """The edge moved the call's media to a leg on another worker (and re-INVITEd the caller with
    it): ``reason`` is ``lost`` (the old worker's heartbeat stopped) or ``draining``. Commands for the
    call's media go to ``to_worker`` from now on (the call record's ``media_worker`` says so too)."""

    TYPE = "media.moved"
    STREAMS = _EVENTS
    from_worker: str
    to_worker: str
    leg_id: str
    reason: str = ""


class TransferRequested(Message, kw_only=True):
    TYPE = "transfer.requested"
    STREAMS = _EVENTS
    target: str
    by: str = ""


class CallError(Message, kw_only=True):
    """Something failed in ``source`` (a :class:`~activecall.contract.Role` value, or the role of a test
    worker)."""

    TYPE = "call.error"
    STREAMS = _EVENTS
    source: str
    error: str


class SaySynthesized(Message, kw_only=True):
    """tts on ``call:{id}:events``: one ``say`` piece became ``duration_ms`` of audio. The llm maps a
    barge-in's ``played_ms`` onto the turn's text with it."""

    TYPE = "say.synthesized"
    STREAMS = _EVENTS
    turn_id: str
    seq: int
    duration_ms: int
    chars: int = 0


# ------------------------------------------------------------------ audio and text


class AudioFrame(Message, kw_only=True):
    """Caller audio: PCM16 mono little-endian, ``at_ms`` on the media clock."""

    TYPE = "audio.frame"
    STREAMS = (Stream.AUDIO_IN,)
    pcm: bytes
    sample_rate: int = 8000
    seq: int = 0
    at_ms: int = 0


class AudioChunk(Message, kw_only=True):
    """Agent audio; ``last`` closes the turn. A turn whose first chunk is not ``interruptible`` plays
    out whatever the caller says; a first chunk with ``not_before_ms`` (the caller's media clock, the
    ``at_ms`` of ``audio:in``) does not start before the caller's audio has reached that point."""

    TYPE = "audio.chunk"
    STREAMS = (Stream.AUDIO_OUT,)
    turn_id: str
    seq: int
    pcm: bytes = b""
    sample_rate: int = 8000
    last: bool = False
    interruptible: bool = True
    not_before_ms: int = 0


class SayText(Message, kw_only=True):
    """Text to speak; ``last`` closes the turn; ``interruptible`` and ``not_before_ms`` go on to the
    turn's audio (:class:`AudioChunk`)."""

    TYPE = "say"
    STREAMS = (Stream.SAY,)
    turn_id: str
    seq: int
    text: str = ""
    last: bool = False
    interruptible: bool = True
    not_before_ms: int = 0


# ------------------------------------------------------------------ sessions (sessions:{role})


class SessionStart(Message, kw_only=True):
    """A call for the workers of ``role`` (one of the session roles of
    :data:`~activecall.contract.SESSION_ROLES`, or a test worker's role)."""

    TYPE = "session.start"
    STREAMS = (Stream.SESSIONS,)
    role: str
    playbook: str = ""
    sample_rate: int = 8000
    variables: dict[str, str] = msgspec.field(default_factory=dict)


# ------------------------------------------------------------------ media control (media:{worker}:control)

_MEDIA_CONTROL: Final = (Stream.MEDIA_CONTROL,)
_REPLY: Final = (Stream.REPLY,)


class LegOpen(Message, kw_only=True):
    """A leg for a call. ``takeover`` marks a leg replacing one whose worker was lost or drains: once
    the leg is updated it picks up the call's agent audio where the caller stopped hearing the old
    leg, at ``heard_until`` (wall time; 0: when the update arrives, the old leg playing until then).
    ``crypto_key`` (base64 of key and salt) is the SRTP key the leg sends with, when it must keep
    its predecessor's; empty: a fresh one."""

    TYPE = "leg.open"
    STREAMS = _MEDIA_CONTROL
    leg_id: str
    srtp: bool = False
    rtcp_mux: bool = False
    reply_to: str = ""
    takeover: bool = False
    heard_until: float = 0.0
    crypto_key: str = ""


class LegOpened(Message, kw_only=True):
    TYPE = "leg.opened"
    STREAMS = _REPLY
    leg_id: str
    worker: str
    address: str
    port: int
    crypto_suite: str = ""
    crypto_key: str = ""
    error: str = ""


class LegUpdate(Message, kw_only=True):
    """The far end's media: address, port, the codec chosen (a :class:`~activecall.contract.Codec`
    name; the worker answers one it does not support with an error) and the stream's direction."""

    TYPE = "leg.update"
    STREAMS = _MEDIA_CONTROL
    leg_id: str
    remote_address: str = ""
    remote_port: int = 0
    payload_type: int = 0
    codec: str = "PCMU"
    telephone_event_pt: int = 0
    ptime: int = 20
    direction: MediaDirection = MediaDirection.SENDRECV
    remote_crypto_suite: str = ""
    remote_crypto_key: str = ""
    reply_to: str = ""


class LegClose(Message, kw_only=True):
    TYPE = "leg.close"
    STREAMS = _MEDIA_CONTROL
    leg_id: str
    reply_to: str = ""


class Ack(Message, kw_only=True):
    """Generic answer to a request that only needs success or an error."""

    TYPE = "ack"
    STREAMS = _REPLY
    ok: bool = True
    error: str = ""


class SendDtmf(Message, kw_only=True):
    TYPE = "dtmf.send"
    STREAMS = _MEDIA_CONTROL
    digits: str
    duration_ms: int = 160


class StopPlayback(Message, kw_only=True):
    """Stop a turn (empty: every turn). ``reason`` ``barge_in`` cuts a paused turn as a barge-in
    (``barge_in`` with the milliseconds played, then ``turn.cancelled``); any other reason is a plain
    stop."""

    TYPE = "playback.stop"
    STREAMS = _MEDIA_CONTROL
    turn_id: str = ""
    reason: str = ""


class ResumePlayback(Message, kw_only=True):
    """Play a paused turn on from where it paused."""

    TYPE = "playback.resume"
    STREAMS = _MEDIA_CONTROL
    turn_id: str = ""


class BargeInPolicy(Message, kw_only=True):
    """The playbook's ``interruption`` for a call's leg: whether caller speech or a key press cuts the
    playing turn, and the guard and minimum speech times (-1 keeps the worker's ``[media]`` setting)."""

    TYPE = "barge_in.policy"
    STREAMS = _MEDIA_CONTROL
    enabled: bool = True
    guard_ms: int = -1
    min_speech_ms: int = -1


class StartRecording(Message, kw_only=True):
    TYPE = "recording.start"
    STREAMS = _MEDIA_CONTROL
    path: str = ""


class PlayAudio(Message, kw_only=True):
    """Play a file (relative to the media worker's audio directory) or an http(s) URL into the call."""

    TYPE = "playback.play"
    STREAMS = _MEDIA_CONTROL
    path_or_url: str
    turn_id: str = ""


# ------------------------------------------------------------------ edge control


class Hangup(Message, kw_only=True):
    TYPE = "call.hangup"
    STREAMS = (Stream.EDGE_CONTROL,)
    reason: str = ""
    by: str = ""


class Transfer(Message, kw_only=True):
    TYPE = "call.transfer"
    STREAMS = (Stream.EDGE_CONTROL,)
    target: str


class Originate(Message, kw_only=True):
    """An outbound call for any edge (the edges read ``edge:originate`` in one consumer group)."""

    TYPE = "call.originate"
    STREAMS = (Stream.ORIGINATE,)
    callee: str
    caller: str = ""
    playbook: str = ""
    username: str = ""
    password: str = ""
    realm: str = ""
    enable_srtp: bool | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    variables: dict[str, str] = msgspec.field(default_factory=dict)
    ring_timeout: float = 60.0


# ------------------------------------------------------------------ tests and benchmarks


class Probe(Message, kw_only=True):
    """A numbered message for bus checks, benchmarks and the session failover test worker."""

    TYPE = "probe"
    STREAMS = (Stream.PROBE_IN, Stream.PROBE_OUT)
    seq: int
    payload: bytes = b""
    worker: str = ""
