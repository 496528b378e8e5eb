"""The named values of the bus contract: call states, directions, codecs, roles, end reasons, consumer
groups and streams.

They are ``StrEnum`` s, so a member is the very string that travels on the wire and compares equal to
it. A message field typed with one of them accepts no other value: an entry carrying one is rejected
as malformed. Adding a member is therefore a change of the wire contract: readers learn it before
writers use it.
"""

from __future__ import annotations

import enum


class CallState(enum.StrEnum):
    """Where a call is in its life, as the call record and ``call.state`` tell it."""

    NEW = "new"
    # Written by the api for an outbound call before any edge takes its Originate.
    QUEUED = "queued"
    DIALING = "dialing"
    RINGING = "ringing"
    EARLY = "early"
    ANSWERED = "answered"
    TRANSFERRING = "transferring"
    ENDED = "ended"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({CallState.ENDED, CallState.REJECTED, CallState.FAILED, CallState.CANCELLED})


class Direction(enum.StrEnum):
    """Who placed the call."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MediaDirection(enum.StrEnum):
    """The direction attribute of an SDP media stream (RFC 8866 section 6.7), as the far end wrote it."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


class Codec(enum.StrEnum):
    """Audio codecs by their SDP encoding name. ``leg.update`` names the codec as free text so that a
    media worker can answer one it does not support with an error rather than lose the request."""

    PCMU = "PCMU"
    PCMA = "PCMA"
    G722 = "G722"


class Role(enum.StrEnum):
    """The kinds of worker; also the names of their entries in ``workers:{role}``."""

    SIP_EDGE = "sip-edge"
    MEDIA = "media"
    ASR = "asr"
    LLM = "llm"
    TTS = "tts"
    API = "api"


# The roles that claim a session of every call from ``sessions:{role}``.
SESSION_ROLES = (Role.ASR, Role.LLM, Role.TTS)


class EndReason(enum.StrEnum):
    """The reasons the platform itself gives for ending a call (``call.ended``, ``call.hangup``, the
    record's ``end_reason``). The field stays free text: a failed call carries the SIP status and
    reason phrase of the far end (``"503 Service Unavailable"``), a model's hangup its own words."""

    HANGUP = "hangup"
    REMOTE_HANGUP = "remote hangup"
    BUSY = "busy"
    NO_ANSWER = "no answer"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    MEDIA_TIMEOUT = "media timeout"
    NO_MEDIA_CAPACITY = "no media capacity"
    MEDIA_NEGOTIATION_FAILED = "media negotiation failed"
    MAX_DURATION = "max_duration"
    PLAYBOOK_ERROR = "playbook error"
    SHUTDOWN = "shutdown"
    API = "api"
    # A media worker closed a leg nobody closed: no RTP for rtp_timeout and no edge answered, or the
    # call had ended without its leg.close (call.error, from the media worker).
    MEDIA_ORPHANED = "media orphaned"
    # The reaper ended a call whose edge and media legs were all gone (docs/architecture.md).
    REAPED = "reaped"


class ConsumerGroup(enum.StrEnum):
    """Consumer groups on the bus: the edges share ``edge:originate``; the workers of a role share
    ``sessions:{role}`` in a group named after the role."""

    ORIGINATE = "sip-edge"
    ASR_SESSIONS = "asr"
    LLM_SESSIONS = "llm"
    TTS_SESSIONS = "tts"


class Stream(enum.StrEnum):
    """The keys messages travel on, after the ``[redis] prefix``. ``{call_id}`` stands for the call id in
    braces, a Redis Cluster hash tag; ``reply:{token}`` is a list (pushed, popped), the others are
    streams. ``Keys`` in :mod:`activecall.bus` builds them."""

    EVENTS = "call:{call_id}:events"
    AUDIO_IN = "call:{call_id}:audio:in"
    AUDIO_OUT = "call:{call_id}:audio:out"
    SAY = "call:{call_id}:say"
    SESSIONS = "sessions:{role}"
    MEDIA_CONTROL = "media:{worker}:control"
    EDGE_CONTROL = "edge:{edge}:control"
    ORIGINATE = "edge:originate"
    REPLY = "reply:{token}"
    # The session failover test worker's streams (activecall.testing.probe_worker).
    PROBE_IN = "call:{call_id}:probe:in"
    PROBE_OUT = "call:{call_id}:probe:out"
