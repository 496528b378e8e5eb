from __future__ import annotations

import msgpack
import msgspec
import pytest

from activecall import messages
from activecall.messages import (
    AudioFrame,
    MalformedMessage,
    Message,
    SayText,
    SessionStart,
    TranscriptFinal,
    UnknownMessage,
    decode,
    known_types,
)

SAMPLES: dict[str, dict[str, object]] = {
    "barge_in.policy": {"enabled": False, "guard_ms": 0, "min_speech_ms": 120},
    "call.state": {"state": "answered", "previous": "ringing"},
    "call.answered": {"direction": "inbound", "caller": "+15550001", "callee": "+15550002"},
    "call.ended": {"reason": "bye", "by": "caller", "status": 200},
    "speech.started": {"at_ms": 1200},
    "speech.stopped": {"at_ms": 2400},
    "transcript.partial": {"text": "hello"},
    "transcript.final": {
        "text": "hello there",
        "confidence": 0.9,
        "utterance": 2,
        "speech_end_ms": 4400,
        "decided_ts": 1700000000.5,
        "eot": "complete",
    },
    "turn.started": {"turn_id": "t1", "text": "Hi"},
    "turn.cancelled": {"turn_id": "t1", "reason": "barge_in"},
    "playback.started": {"turn_id": "t1"},
    "playback.finished": {"turn_id": "t1", "played_ms": 2000},
    "playback.paused": {"turn_id": "t1", "played_ms": 900},
    "playback.resumed": {"turn_id": "t1", "played_ms": 900},
    "playback.resume": {"turn_id": "t1"},
    "turn.timings": {"turn_id": "t1", "kind": "speech", "stages": {"end_of_turn": 310, "first_packet": 480}},
    "barge_in": {"turn_id": "t1", "played_ms": 740},
    "dtmf": {"digit": "5", "duration_ms": 240},
    "media.timeout": {"idle_s": 30.0},
    "media.moved": {"from_worker": "media-1", "to_worker": "media-2", "leg_id": "c1-2", "reason": "lost"},
    "transfer.requested": {"target": "tel:+15550003"},
    "call.error": {"source": "asr", "error": "boom"},
    "audio.frame": {"pcm": b"\x00\x01" * 160, "seq": 7, "at_ms": 140},
    "audio.chunk": {"turn_id": "t1", "seq": 3, "pcm": b"\x01\x02" * 80, "last": True, "interruptible": False},
    "say": {"turn_id": "t1", "seq": 0, "text": "Hello.", "last": False, "interruptible": False},
    "session.start": {"role": "llm", "playbook": "greeting.md", "variables": {"X-Twilio-CallSid": "CA1"}},
    "leg.open": {"leg_id": "l1", "srtp": True, "reply_to": "r", "takeover": True, "heard_until": 1.7e9},
    "leg.opened": {"leg_id": "l1", "worker": "media-1", "address": "127.0.0.1", "port": 12000},
    "leg.update": {"leg_id": "l1", "remote_address": "127.0.0.1", "remote_port": 4000, "payload_type": 8},
    "leg.close": {"leg_id": "l1"},
    "ack": {"ok": False, "error": "no such leg"},
    "dtmf.send": {"digits": "12#"},
    "playback.stop": {"turn_id": "t1", "reason": "barge_in"},
    "recording.start": {"path": "/tmp/r.wav"},
    "call.hangup": {"reason": "tool", "by": "llm"},
    "call.transfer": {"target": "sip:+1555@trunk.pstn.twilio.com"},
    "call.originate": {"callee": "sip:+18005551234@x.pstn.twilio.com", "enable_srtp": True},
    "probe": {"seq": 1, "payload": b"x"},
    "playback.play": {"path_or_url": "prompts/welcome.wav", "turn_id": "t2"},
    "say.synthesized": {"turn_id": "t1", "seq": 0, "duration_ms": 1320, "chars": 21},
}


def test_every_registered_type_has_a_sample() -> None:
    assert set(known_types()) == set(SAMPLES)


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_round_trip(type_name: str) -> None:
    cls = known_types()[type_name]
    original = cls(call_id="c-1", ts=1700000000.25, **SAMPLES[type_name])
    copy = decode(original.encode())
    assert type(copy) is cls
    assert msgspec.structs.asdict(copy) == msgspec.structs.asdict(original)


def test_envelope_fields_are_on_the_wire() -> None:
    wire = msgpack.unpackb(SayText(call_id="c", ts=1.5, turn_id="t", seq=2, text="Hi").encode())
    assert wire == {
        "type": "say",
        "v": 1,
        "call_id": "c",
        "ts": 1.5,
        "turn_id": "t",
        "seq": 2,
        "text": "Hi",
        "last": False,
        "interruptible": True,
        "not_before_ms": 0,
    }


def test_entries_of_an_older_writer_take_the_new_fields_defaults() -> None:
    """A say piece or an audio chunk from before ``interruptible`` may be cut; a final from before
    the turn detector has no end-of-turn fields."""
    old_say = {
        "v": 1,
        "type": "say",
        "call_id": "c",
        "ts": 1.0,
        "turn_id": "t",
        "seq": 0,
        "text": "Hi",
        "last": True,
    }
    old_final = {
        "v": 1,
        "type": "transcript.final",
        "call_id": "c",
        "ts": 1.0,
        "text": "hello",
        "utterance": 1,
    }
    say, final = decode(msgpack.packb(old_say)), decode(msgpack.packb(old_final))
    assert isinstance(say, SayText) and say.interruptible is True
    assert isinstance(final, TranscriptFinal) and (final.speech_end_ms, final.decided_ts, final.eot) == (
        0,
        0.0,
        "",
    )


def test_bytes_of_an_audio_frame() -> None:
    """The type comes first, then the envelope, then the fields in the order the class declares them."""
    frame = AudioFrame(call_id="c", ts=2.0, pcm=b"\x01\x00", sample_rate=8000, seq=1, at_ms=20)
    assert frame.encode() == bytes.fromhex(
        "88a474797065ab617564696f2e6672616d65a17601a763616c6c5f6964a163a27473cb4000000000000000"
        "a370636dc4020100ab73616d706c655f72617465cd1f40a373657101a561745f6d7314"
    )


def test_a_message_is_stamped_when_first_encoded() -> None:
    say = SayText(turn_id="t", seq=0)
    assert say.ts == 0.0
    stamped = decode(say.encode())
    assert stamped.ts == say.ts > 0
    assert decode(say.encode()) == stamped


def test_unknown_type_and_version_are_rejected() -> None:
    with pytest.raises(UnknownMessage, match="unknown message type 'nope'"):
        decode(msgpack.packb({"v": 1, "type": "nope"}))
    with pytest.raises(UnknownMessage, match="unknown envelope version 2"):
        decode(msgpack.packb({"v": 2, "type": "say"}))


def test_malformed_entries_are_rejected() -> None:
    with pytest.raises(MalformedMessage):
        decode(b"\xc1")
    with pytest.raises(MalformedMessage):
        decode(msgpack.packb([1, 2]))
    with pytest.raises(MalformedMessage, match="say"):
        decode(msgpack.packb({"v": 1, "type": "say", "seq": 1}))  # turn_id missing


def test_unknown_fields_from_a_newer_writer_are_ignored() -> None:
    data = msgpack.packb(
        {"v": 1, "type": "session.start", "call_id": "c", "ts": 1.0, "role": "asr", "future": 1}
    )
    message = decode(data)
    assert isinstance(message, SessionStart) and message.role == "asr"


def test_duplicate_type_names_are_refused() -> None:
    with pytest.raises(TypeError, match="registered twice"):

        class Clash(Message, kw_only=True):
            TYPE = "say"

    assert messages.known_types()["say"] is SayText


def test_a_message_class_must_name_its_type() -> None:
    with pytest.raises(TypeError, match="declares no TYPE"):

        class Nameless(Message, kw_only=True):
            text: str = ""

    assert "Nameless" not in {cls.__name__ for cls in known_types().values()}


@pytest.mark.parametrize(
    ("type_name", "fields", "where"),
    [
        ("leg.update", {"leg_id": "l1", "remote_port": "abc"}, "remote_port"),
        ("say", {"turn_id": "t", "seq": "1"}, "seq"),
        ("audio.frame", {"pcm": "not bytes"}, "pcm"),
        ("ack", {"ok": "yes"}, "ok"),
        ("session.start", {"role": "asr", "variables": {"a": 1}}, "variables"),
        ("turn.timings", {"turn_id": "t", "stages": {"first_packet": "fast"}}, "stages"),
        ("probe", {"seq": 1, "call_id": 7}, "call_id"),
        ("probe", {"seq": 1, "ts": "now"}, "ts"),
    ],
)
def test_a_wrongly_typed_field_is_malformed(type_name: str, fields: dict[str, object], where: str) -> None:
    entry = msgpack.packb({"v": 1, "type": type_name, "call_id": "c", "ts": 1.0, **fields})
    with pytest.raises(MalformedMessage, match=rf"{type_name}: .*\$\.{where}"):
        decode(entry)


def test_numbers_are_read_as_the_wire_of_before_wrote_them() -> None:
    """An integer where a float is declared is a float; a float where an integer is declared is not."""
    entry = {"v": 1, "type": "media.timeout", "call_id": "c", "ts": 1700000000, "idle_s": 30}
    message = decode(msgpack.packb(entry))
    assert isinstance(message, messages.MediaTimeout) and (message.ts, message.idle_s) == (1.7e9, 30.0)
    with pytest.raises(MalformedMessage, match="at_ms"):
        decode(msgpack.packb({"v": 1, "type": "speech.started", "at_ms": 20.5}))
