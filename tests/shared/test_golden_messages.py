"""The wire stays compatible: entries written before the typed contract decode to the same values,
and what the encoder writes now holds the same map an older reader expects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest

from activecall.messages import AudioFrame, Message, decode, known_types

GOLDEN = Path(__file__).parent / "golden"
ENTRIES: dict[str, bytes] = msgpack.unpackb((GOLDEN / "entries.msgpack").read_bytes())
EXPECTED: dict[str, dict[str, Any]] = json.loads((GOLDEN / "expected.json").read_text())
# Message types created after the golden entries were recorded: no writer of before wrote them.
TYPES_ADDED_SINCE = frozenset({"media.moved"})


def from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {k: from_json(v) for k, v in value.items()}
    return value


def fields_of(message: Message) -> dict[str, Any]:
    values = msgspec.structs.asdict(message)
    for envelope in ("v", "call_id", "ts"):
        del values[envelope]
    return values


def test_there_is_a_golden_entry_of_every_type() -> None:
    assert set(ENTRIES) == set(EXPECTED) == set(known_types()) - TYPES_ADDED_SINCE


def added_fields(cls: type[Message], golden_fields: dict[str, Any]) -> dict[str, Any]:
    """The fields a type gained after its golden entry was written, with their defaults (a field added
    to a message on the wire must have one, or older writers' entries would not decode)."""
    added: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        if field.name in golden_fields or field.name in ("v", "call_id", "ts"):
            continue
        assert field.default is not msgspec.NODEFAULT, f"{cls.__name__}.{field.name} needs a default"
        added[field.name] = field.default
    return added


@pytest.mark.parametrize("type_name", sorted(ENTRIES))
def test_a_golden_entry_decodes_to_its_values(type_name: str) -> None:
    expected = EXPECTED[type_name]
    message = decode(ENTRIES[type_name])
    assert type(message).__name__ == expected["class"]
    assert type_name == message.TYPE
    assert (message.call_id, message.ts) == (expected["call_id"], expected["ts"])
    golden = from_json(expected["fields"])
    assert fields_of(message) == golden | added_fields(type(message), golden)


@pytest.mark.parametrize("type_name", sorted(ENTRIES))
def test_the_encoder_writes_the_map_of_the_golden_entry(type_name: str) -> None:
    """Map order aside, today's bytes hold what the encoder of before wrote, and only fields added since
    besides (a reader of before ignores keys it does not know): it reads them as it read its own."""
    expected = EXPECTED[type_name]
    cls = known_types()[type_name]
    golden = from_json(expected["fields"])
    message = cls(call_id=expected["call_id"], ts=expected["ts"], **golden)
    written = msgpack.unpackb(message.encode())
    before = msgpack.unpackb(ENTRIES[type_name])
    assert {k: v for k, v in written.items() if k in before} == before
    assert set(written) - set(before) == set(added_fields(cls, golden))
    assert decode(message.encode()) == decode(ENTRIES[type_name])


def test_the_media_workers_packed_audio_xadd_of_before_decodes() -> None:
    command = (GOLDEN / "audio_in_xadd.resp").read_bytes()
    arguments = resp_array(command)
    assert arguments[:7] == [b"XADD", arguments[1], b"MAXLEN", b"~", b"3000", b"*", b"m"]
    assert arguments[1] == b"ac:call:{%s}:audio:in" % EXPECTED["audio.frame"]["call_id"].encode()
    frame = decode(arguments[7])
    assert isinstance(frame, AudioFrame)
    assert fields_of(frame) == from_json(EXPECTED["audio.frame"]["fields"])


def resp_array(data: bytes) -> list[bytes]:
    """The bulk strings of one RESP array (a command as a client sends it)."""
    assert data.startswith(b"*")
    head, rest = data.split(b"\r\n", 1)
    items = []
    for _ in range(int(head[1:])):
        size_line, rest = rest.split(b"\r\n", 1)
        assert size_line.startswith(b"$")
        size = int(size_line[1:])
        items.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    assert rest == b""
    return items
