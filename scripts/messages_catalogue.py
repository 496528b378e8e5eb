"""Prints docs/messages.md: every bus message, the streams it travels on, its fields, and the named
values of the contract, from activecall.messages and activecall.contract.

Run ``python scripts/messages_catalogue.py > docs/messages.md``; a test checks the file is current.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
import typing
from typing import Any

import msgspec

from activecall import contract
from activecall.messages import WIRE_VERSION, Message, known_types

ENVELOPE = ("v", "call_id", "ts")
ENUMS = (
    contract.CallState,
    contract.Direction,
    contract.MediaDirection,
    contract.Codec,
    contract.Role,
    contract.EndReason,
    contract.ConsumerGroup,
    contract.Stream,
)


def type_text(annotation: Any) -> str:
    """A field's type as the docs write it: enums link to their table."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " \\| ".join(type_text(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_text(a) for a in typing.get_args(annotation))}]"
    return str(annotation.__name__)


def literal(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{json.dumps(value)}`" if isinstance(value, str) else f"`{value!r}`"


def default_text(field: msgspec.structs.FieldInfo) -> str:
    if field.default_factory is not msgspec.NODEFAULT:
        return literal(field.default_factory())
    if field.default is msgspec.NODEFAULT:
        return "required"
    return literal(field.default)


def markdown(text: str) -> str:
    """Docstring markup as Markdown: ``code`` and Sphinx cross-references become code spans."""
    text = re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", text)
    return text.replace("``", "`")


def summary(cls: type[Any]) -> str:
    """The first paragraph of the class's own docstring, on one line."""
    doc = cls.__dict__.get("__doc__")
    return markdown(" ".join(inspect.cleandoc(doc).split("\n\n")[0].split())) if doc else ""


def message_section(cls: type[Message]) -> list[str]:
    streams = ", ".join(f"`{stream.value}`" for stream in cls.STREAMS)
    lines = ["", f"### `{cls.TYPE}`: {cls.__name__}", ""]
    if summary(cls):
        lines += [summary(cls), ""]
    lines += [f"Streams: {streams}.", ""]
    fields = [f for f in msgspec.structs.fields(cls) if f.name not in ENVELOPE]
    if not fields:
        return lines + ["No fields beyond the envelope."]
    lines += ["| field | type | default |", "| --- | --- | --- |"]
    lines += [f"| `{f.name}` | {type_text(f.type)} | {default_text(f)} |" for f in fields]
    return lines


def enum_section(named: type[enum.StrEnum]) -> list[str]:
    lines = ["", f"### {named.__name__}", ""]
    if summary(named):
        lines += [summary(named), ""]
    lines += ["| name | value |", "| --- | --- |"]
    return lines + [f"| `{member.name}` | `{member.value}` |" for member in named]


def stream_table() -> list[str]:
    lines = ["", "| stream | messages |", "| --- | --- |"]
    for stream in contract.Stream:
        carried = [cls.TYPE for cls in known_types().values() if stream in cls.STREAMS]
        lines.append(f"| `{stream.value}` | {', '.join(f'`{name}`' for name in carried)} |")
    return lines


def render() -> str:
    envelope = [f for f in msgspec.structs.fields(Message) if f.name in ENVELOPE]
    lines = [
        "# Bus messages",
        "",
        "Every Redis Streams entry of the bus holds one field, `m`: a msgpack map of the message's `type`,",
        f"the envelope (`v` = {WIRE_VERSION}, `call_id`, `ts`) and the message's fields. The types are",
        "msgspec structures in `activecall.messages`; the named values are `StrEnum`s in",
        "`activecall.contract`. A reader skips and counts (`activecall_bus_messages_skipped_total{reason}`)",
        "an entry of an unknown type or version (`UnknownMessage`) and one that is not a map or has a field",
        "missing or of the wrong type (`MalformedMessage`); it ignores fields it does not know. Type names",
        "are `<subject>.<event>`; a few older ones are one word (`say`, `dtmf`, `ack`, `probe`) or",
        "underscored (`barge_in`): type names are the wire contract and stay as they are. This page is",
        "written by `scripts/messages_catalogue.py`.",
        "",
        "## Envelope",
        "",
        "| field | type | default |",
        "| --- | --- | --- |",
        "| `type` | str | the class's `TYPE` |",
    ]
    lines += [f"| `{f.name}` | {type_text(f.type)} | {default_text(f)} |" for f in envelope]
    lines += [
        "",
        "A message encoded with `ts` 0 is stamped with the time of its first encoding.",
        "",
        "## Streams",
    ]
    lines += stream_table()
    lines += ["", "## Messages"]
    for cls in known_types().values():
        lines += message_section(cls)
    lines += ["", "## Named values"]
    for named in ENUMS:
        lines += enum_section(named)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
