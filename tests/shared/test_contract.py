"""The named values of the bus contract and what each message declares about itself."""

from __future__ import annotations

import re

import msgpack
import pytest

from activecall.bus import Keys
from activecall.contract import (
    FINAL_STATES,
    SESSION_ROLES,
    CallState,
    ConsumerGroup,
    Direction,
    MediaDirection,
    Role,
    Stream,
)
from activecall.messages import (
    CallAnswered,
    CallStateChanged,
    LegUpdate,
    MalformedMessage,
    SessionStart,
    decode,
    known_types,
)
from activecall.registry import ROLES

KEYS = Keys("ac:")
BUILT = {
    Stream.EVENTS: KEYS.events("c1"),
    Stream.AUDIO_IN: KEYS.audio_in("c1"),
    Stream.AUDIO_OUT: KEYS.audio_out("c1"),
    Stream.SAY: KEYS.say("c1"),
    Stream.SESSIONS: KEYS.sessions("asr"),
    Stream.MEDIA_CONTROL: KEYS.media_control("media-1"),
    Stream.EDGE_CONTROL: KEYS.edge_control("edge-1"),
    Stream.ORIGINATE: KEYS.originate(),
    Stream.REPLY: KEYS.reply("ab12"),
    Stream.PROBE_IN: KEYS.call_stream("c1", "probe:in"),
    Stream.PROBE_OUT: KEYS.call_stream("c1", "probe:out"),
}


def test_members_are_the_strings_of_the_wire() -> None:
    members: list[str] = [CallState.ANSWERED, Role.SIP_EDGE, ConsumerGroup.ORIGINATE, Direction.INBOUND]
    assert members == ["answered", "sip-edge", "sip-edge", "inbound"]
    assert [f"{m}" for m in members] == [str(m) for m in members] == members
    assert Direction("inbound") is Direction.INBOUND
    assert tuple(Role) == ROLES
    session_groups = (ConsumerGroup.ASR_SESSIONS, ConsumerGroup.LLM_SESSIONS, ConsumerGroup.TTS_SESSIONS)
    assert [str(r) for r in SESSION_ROLES] == [str(g) for g in session_groups]
    assert {"ended", "rejected", "failed", "cancelled"} == FINAL_STATES


def key_pattern(stream: Stream) -> str:
    """A regular expression of the keys of ``stream``: the call id in its hash tag braces, any other
    placeholder one segment."""
    parts = re.split(r"(\{[a-z_]+\})", stream.value)
    placeholders = {"{call_id}": r"\{[^}]+\}"}
    return "".join(
        placeholders.get(part, "[^:]+") if part.startswith("{") else re.escape(part) for part in parts
    )


def test_every_stream_is_the_key_the_bus_builds() -> None:
    assert set(BUILT) == set(Stream)
    for stream, key in BUILT.items():
        assert re.fullmatch("ac:" + key_pattern(stream), key), (stream, key)


@pytest.mark.parametrize("type_name", sorted(known_types()))
def test_every_message_declares_its_type_and_streams(type_name: str) -> None:
    cls = known_types()[type_name]
    assert cls.TYPE == type_name == cls.__struct_config__.tag
    assert cls.STREAMS and all(isinstance(s, Stream) for s in cls.STREAMS)
    assert cls.__match_args__ == ()  # every field is named when a message is built
    assert cls.__struct_fields__[:3] == ("v", "call_id", "ts")


def test_fields_that_name_a_value_of_the_contract_take_its_type() -> None:
    assert decode(CallStateChanged(state=CallState.RINGING, ts=1.0).encode()) == CallStateChanged(
        state=CallState.RINGING, ts=1.0
    )
    message = decode(CallAnswered(direction=Direction.OUTBOUND, ts=1.0).encode())
    assert isinstance(message, CallAnswered) and message.direction is Direction.OUTBOUND
    update = decode(LegUpdate(leg_id="l", direction=MediaDirection.SENDONLY, ts=1.0).encode())
    assert isinstance(update, LegUpdate) and update.direction is MediaDirection.SENDONLY


@pytest.mark.parametrize(
    ("type_name", "fields"),
    [
        ("call.state", {"state": "busy"}),  # an end reason, not a state
        ("call.answered", {"direction": "sideways"}),
        ("leg.update", {"leg_id": "l", "direction": "both"}),
    ],
)
def test_a_value_outside_the_contract_is_malformed(type_name: str, fields: dict[str, object]) -> None:
    entry = msgpack.packb({"v": 1, "type": type_name, "call_id": "c", "ts": 1.0, **fields})
    with pytest.raises(MalformedMessage, match=type_name):
        decode(entry)


def test_a_session_role_stays_open_to_test_workers() -> None:
    message = decode(SessionStart(role="probe", ts=1.0).encode())
    assert isinstance(message, SessionStart) and message.role == "probe"
