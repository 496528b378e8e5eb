"""Commands on a live call, as bus messages to the process that owns that part of the call.

Signalling (hangup, transfer) goes to the edge that holds the dialog, ``edge:{edge}:control``;
media (interrupt, DTMF, play) to the call's media worker, ``media:{worker}:control``; text to say
to the call's ``say`` stream, where the tts worker picks it up like any agent turn.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from activecall.api.gateway import Gateway, GatewayError
from activecall.api.metrics import COMMANDS
from activecall.api.models import (
    CommandAccepted,
    DtmfBody,
    HangupBody,
    InterruptBody,
    PlayBody,
    SayBody,
    TransferBody,
)
from activecall.messages import Hangup, PlayAudio, SayText, SendDtmf, StopPlayback, Transfer

log = logging.getLogger("activecall.api.commands")


async def _edge_control(gateway: Gateway, call_id: str) -> str:
    """The control stream of the edge holding the call's dialog."""
    record = await gateway.live_record(call_id)
    if not record.edge:
        raise GatewayError(409, "call not yet placed")
    return gateway.bus.keys.edge_control(record.edge)


async def _media_control(gateway: Gateway, call_id: str) -> str:
    """The control stream of the media worker serving the call."""
    record = await gateway.live_record(call_id)
    if not record.media_worker:
        raise GatewayError(409, "call has no media yet")
    return gateway.bus.keys.media_control(record.media_worker)


async def hangup(gateway: Gateway, call_id: str, body: HangupBody) -> CommandAccepted:
    stream = await _edge_control(gateway, call_id)
    await gateway.bus.publish(stream, Hangup(call_id=call_id, reason=body.reason, by="api"))
    return CommandAccepted(command="hangup")


async def transfer(gateway: Gateway, call_id: str, body: TransferBody) -> CommandAccepted:
    stream = await _edge_control(gateway, call_id)
    await gateway.bus.publish(stream, Transfer(call_id=call_id, target=body.target))
    return CommandAccepted(command="transfer")


async def say(gateway: Gateway, call_id: str, body: SayBody) -> CommandAccepted:
    await gateway.live_record(call_id)
    turn_id = uuid.uuid4().hex
    message = SayText(call_id=call_id, turn_id=turn_id, seq=0, text=body.text, last=True)
    await gateway.bus.publish(gateway.bus.keys.say(call_id), message)
    return CommandAccepted(command="say", turn_id=turn_id)


async def interrupt(gateway: Gateway, call_id: str, body: InterruptBody) -> CommandAccepted:
    stream = await _media_control(gateway, call_id)
    await gateway.bus.publish(stream, StopPlayback(call_id=call_id))
    return CommandAccepted(command="interrupt")


async def dtmf(gateway: Gateway, call_id: str, body: DtmfBody) -> CommandAccepted:
    stream = await _media_control(gateway, call_id)
    message = SendDtmf(call_id=call_id, digits=body.digits.upper(), duration_ms=body.duration_ms)
    await gateway.bus.publish(stream, message)
    return CommandAccepted(command="dtmf")


async def play(gateway: Gateway, call_id: str, body: PlayBody) -> CommandAccepted:
    stream = await _media_control(gateway, call_id)
    turn_id = uuid.uuid4().hex
    source = body.file if body.file is not None else body.url
    assert source is not None  # PlayBody insists on exactly one of them
    await gateway.bus.publish(stream, PlayAudio(call_id=call_id, path_or_url=source, turn_id=turn_id))
    return CommandAccepted(command="play", turn_id=turn_id)


Command = Callable[[Gateway, str, Any], Awaitable[CommandAccepted]]
COMMANDS_BY_NAME: dict[str, Command] = {
    "hangup": hangup,
    "transfer": transfer,
    "say": say,
    "interrupt": interrupt,
    "dtmf": dtmf,
    "play": play,
}


async def run_command(gateway: Gateway, call_id: str, name: str, body: Any) -> CommandAccepted:
    """Run one command, counting its result; raises :class:`GatewayError` (404, 409)."""
    try:
        accepted = await COMMANDS_BY_NAME[name](gateway, call_id, body)
    except GatewayError as exc:
        COMMANDS.labels(name, str(exc.status)).inc()
        raise
    COMMANDS.labels(name, "ok").inc()
    log.info("command sent", extra={"call_id": call_id, "command": name})
    return accepted
