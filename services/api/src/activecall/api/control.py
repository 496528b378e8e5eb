"""Routes of the call commands: ``POST /calls/{id}/hangup|transfer|say|interrupt|dtmf|play``.

Each answers 202: the command is on the bus, and its effect shows on the call's events.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from activecall.api.auth import require_client
from activecall.api.calls import PROBLEMS, CallId
from activecall.api.commands import run_command
from activecall.api.gateway import Gateway, get_gateway
from activecall.api.models import (
    CommandAccepted,
    DtmfBody,
    HangupBody,
    InterruptBody,
    PlayBody,
    Problem,
    SayBody,
    TransferBody,
)

COMMAND_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    404: {"model": Problem, "description": "Unknown call"},
    409: {"model": Problem, "description": "The call has ended, or has no dialog or media yet"},
}

router = APIRouter(
    prefix="/calls/{call_id}",
    tags=["commands"],
    dependencies=[Depends(require_client)],
    responses=COMMAND_PROBLEMS,
)


@router.post("/hangup", status_code=202, response_model=CommandAccepted, response_model_exclude_none=True)
async def hangup(
    call_id: CallId, body: HangupBody | None = None, gateway: Gateway = Depends(get_gateway)
) -> CommandAccepted:
    """End the call (BYE, or CANCEL while it rings), sent to the edge holding the dialog."""
    return await run_command(gateway, call_id, "hangup", body or HangupBody())


@router.post("/transfer", status_code=202, response_model=CommandAccepted, response_model_exclude_none=True)
async def transfer(
    call_id: CallId, body: TransferBody, gateway: Gateway = Depends(get_gateway)
) -> CommandAccepted:
    """Transfer the call to another URI (REFER)."""
    return await run_command(gateway, call_id, "transfer", body)


@router.post("/say", status_code=202, response_model=CommandAccepted, response_model_exclude_none=True)
async def say(call_id: CallId, body: SayBody, gateway: Gateway = Depends(get_gateway)) -> CommandAccepted:
    """Speak a text as one agent turn; the answer names the turn."""
    return await run_command(gateway, call_id, "say", body)


@router.post("/interrupt", status_code=202, response_model=CommandAccepted, response_model_exclude_none=True)
async def interrupt(
    call_id: CallId, body: InterruptBody | None = None, gateway: Gateway = Depends(get_gateway)
) -> CommandAccepted:
    """Stop what the agent is saying now."""
    return await run_command(gateway, call_id, "interrupt", body or InterruptBody())


@router.post("/dtmf", status_code=202, response_model=CommandAccepted, response_model_exclude_none=True)
async def dtmf(call_id: CallId, body: DtmfBody, gateway: Gateway = Depends(get_gateway)) -> CommandAccepted:
    """Send DTMF digits to the far end (RFC 4733 telephone-events)."""
    return await run_command(gateway, call_id, "dtmf", body)


@router.post("/play", status_code=202, response_model=CommandAccepted, response_model_exclude_none=True)
async def play(call_id: CallId, body: PlayBody, gateway: Gateway = Depends(get_gateway)) -> CommandAccepted:
    """Play an audio file of the media worker, or a URL, into the call."""
    return await run_command(gateway, call_id, "play", body)
