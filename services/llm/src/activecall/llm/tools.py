"""The tools the agent can use on a call, as the model sees them and as they are carried out.

- ``hangup``: end the call once the agent's last words have been heard;
- ``transfer``: transfer the call (to ``target``, else the playbook's ``transfer_target``), likewise
  after the last words;
- ``send_dtmf``: send key presses to the far end (RFC 4733 events, through the call's media worker);
- ``goto_scene``: continue in another scene of the playbook (its prompt applies from the next request);
- ``set_variable``: remember a value; templates and prompts see it as a variable from then on.

A tool never raises into the conversation: a bad argument becomes an error result the model reads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from activecall.bus import Bus, with_reconnect
from activecall.llm import metrics
from activecall.llm.history import CallState, EndAction
from activecall.llm.providers.base import ToolCall
from activecall.messages import SendDtmf
from activecall.playbook import CALL_VARIABLES, DTMF_DIGITS, Playbook
from activecall.store import CallStore

log = logging.getLogger("activecall.llm.tools")

TOOL_NAMES: Final = ("hangup", "transfer", "send_dtmf", "goto_scene", "set_variable")
MAX_DTMF_DIGITS: Final = 32
_VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ToolError(ValueError):
    """A tool call that cannot be carried out; its message is the tool result."""


@dataclass(frozen=True)
class ToolOutcome:
    result: str
    is_error: bool = False
    ends_call: bool = False


def tool_definitions(playbook: Playbook) -> list[dict[str, Any]]:
    """The tools of a call in the Messages API's form."""
    target: dict[str, Any] = {"type": "string", "description": "SIP or tel URI to transfer to"}
    if playbook.transfer_target:
        target["description"] += f"; default {playbook.transfer_target}"
    return [
        _tool("hangup", "End the call after your current words. Say goodbye first.", {"reason": _str("why")}),
        _tool(
            "transfer",
            "Transfer the caller to a person or another number after your current words.",
            {"target": target},
            [] if playbook.transfer_target else ["target"],
        ),
        _tool(
            "send_dtmf",
            "Press keys on the phone keypad (for example to navigate another party's menu).",
            {"digits": _str("keys to press: 0-9, *, #, A-D")},
            ["digits"],
        ),
        _tool(
            "goto_scene",
            "Continue the conversation in another scene of the call script.",
            {"scene": {"type": "string", "enum": list(playbook.scene_names)}},
            ["scene"],
        ),
        _tool(
            "set_variable",
            "Remember a value (such as the caller's name) for the rest of the call.",
            {"name": _str("a name made of letters, digits and _"), "value": _str("the value")},
            ["name", "value"],
        ),
    ]


def _str(description: str) -> dict[str, str]:
    return {"type": "string", "description": description}


def _tool(
    name: str, description: str, properties: dict[str, Any], required: list[str] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"name": name, "description": description, "input_schema": schema}


class ToolRunner:
    """Carries out tool calls for one call, changing its state and sending commands."""

    def __init__(self, bus: Bus, call_id: str, playbook: Playbook, state: CallState) -> None:
        self.bus = bus
        self.call_id = call_id
        self.playbook = playbook
        self.state = state
        self.store = CallStore(bus.redis, bus.keys, bus.settings)

    async def run(self, call: ToolCall, turn_id: str) -> ToolOutcome:
        metrics.TOOL_CALLS.labels(call.name if call.name in TOOL_NAMES else "unknown").inc()
        handler = getattr(self, f"_{call.name}", None) if call.name in TOOL_NAMES else None
        try:
            if handler is None:
                raise ToolError(f"unknown tool {call.name!r}")
            outcome: ToolOutcome = await handler(call.input, turn_id)
        except ToolError as exc:
            log.info("tool refused", extra={"call_id": self.call_id, "tool": call.name, "error": str(exc)})
            return ToolOutcome(str(exc), is_error=True)
        log.info("tool done", extra={"call_id": self.call_id, "tool": call.name, "result": outcome.result})
        return outcome

    async def _hangup(self, arguments: Mapping[str, Any], turn_id: str) -> ToolOutcome:
        reason = str(arguments.get("reason") or "agent")
        self.state.pending_end = EndAction("hangup", turn_id=turn_id, reason=reason)
        return ToolOutcome("The call ends once your last words have been heard.", ends_call=True)

    async def _transfer(self, arguments: Mapping[str, Any], turn_id: str) -> ToolOutcome:
        target = str(arguments.get("target") or self.playbook.transfer_target or "")
        if not target:
            raise ToolError("no target given and the call script has no transfer_target")
        self.state.pending_end = EndAction("transfer", turn_id=turn_id, target=target)
        return ToolOutcome(
            f"The call is transferred to {target} once your last words have been heard.", ends_call=True
        )

    async def _send_dtmf(self, arguments: Mapping[str, Any], turn_id: str) -> ToolOutcome:
        digits = str(arguments.get("digits") or "").upper().replace(" ", "")
        if not digits or len(digits) > MAX_DTMF_DIGITS or not set(digits) <= DTMF_DIGITS:
            raise ToolError(f"digits must be 1 to {MAX_DTMF_DIGITS} of 0-9, *, #, A-D; got {digits!r}")
        record = await self.store.get(self.call_id)
        if record is None or not record.media_worker:
            raise ToolError("the call has no media worker to send key presses")
        command = SendDtmf(call_id=self.call_id, digits=digits)
        stream = self.bus.keys.media_control(record.media_worker)
        await with_reconnect(lambda: self.bus.publish(stream, command), "dtmf.send")
        return ToolOutcome(f"Sent {digits}.")

    async def _goto_scene(self, arguments: Mapping[str, Any], turn_id: str) -> ToolOutcome:
        scene = str(arguments.get("scene") or "")
        if scene not in self.playbook.scene_names:
            raise ToolError(f"no scene {scene!r}; scenes: {', '.join(self.playbook.scene_names)}")
        self.state.scene = scene
        return ToolOutcome(f"Now in scene {scene}.")

    async def _set_variable(self, arguments: Mapping[str, Any], turn_id: str) -> ToolOutcome:
        name, value = str(arguments.get("name") or ""), arguments.get("value")
        if not _VARIABLE_NAME.match(name) or name in CALL_VARIABLES:
            raise ToolError(
                f"{name!r} cannot be set: use letters, digits and _, not {', '.join(CALL_VARIABLES)}"
            )
        self.state.variables[name] = "" if value is None else str(value)
        return ToolOutcome(f"{name} is set.")
