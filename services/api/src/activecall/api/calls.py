"""Routes of outbound calls and call records: ``POST /call``, ``GET /calls``, ``GET /calls/{id}``."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.exceptions import RequestValidationError

from activecall.api.auth import require_client
from activecall.api.gateway import Gateway, GatewayError, get_gateway
from activecall.api.metrics import ORIGINATES
from activecall.api.models import (
    CALL_ID_PATTERN,
    CallCreated,
    CallDetails,
    CallList,
    CallRequest,
    CallSummary,
    Problem,
)
from activecall.api.validation import find_playbook
from activecall.contract import CallState, Direction
from activecall.messages import CallStateChanged, Originate
from activecall.store import CallRecord

log = logging.getLogger("activecall.api.calls")

DEFAULT_RING_TIMEOUT_S = 60.0

CallId = Annotated[str, Path(pattern=CALL_ID_PATTERN, examples=["5f0c6d1e9a2b4c3d8e7f6a5b4c3d2e1f"])]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No or wrong bearer token"},
    403: {"model": Problem, "description": "No tokens configured and the client is not on loopback"},
}

router = APIRouter(dependencies=[Depends(require_client)], responses=PROBLEMS)


def playbook_not_found(name: str) -> RequestValidationError:
    """The same error shape as FastAPI's own validation errors, naming the field."""
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("body", "playbook"),
                "msg": f"Value error, playbook {name!r} is not in any playbook directory",
                "input": name,
            }
        ]
    )


@router.post(
    "/call",
    status_code=201,
    response_model=CallCreated,
    tags=["calls"],
    responses={503: {"model": Problem, "description": "No live sip-edge or media worker has room"}},
)
async def place_call(
    body: CallRequest, response: Response, gateway: Gateway = Depends(get_gateway)
) -> CallCreated:
    """Queue an outbound call: any sip-edge takes it from ``edge:originate`` and dials the callee."""
    if find_playbook(body.playbook, gateway.config.playbooks.dirs) is None:
        raise playbook_not_found(body.playbook)
    try:
        await gateway.require_capacity()
    except GatewayError:
        ORIGINATES.labels("no_capacity").inc()
        raise
    call_id = uuid.uuid4().hex
    await gateway.store.create(
        CallRecord(
            call_id=call_id,
            direction=Direction.OUTBOUND,
            state=CallState.QUEUED,
            caller=body.caller or "",
            callee=body.callee,
            playbook=body.playbook,
            variables=dict(body.variables),
        )
    )
    await gateway.bus.emit(call_id, CallStateChanged(state=CallState.QUEUED))
    await gateway.ensure_originate_group()
    await gateway.bus.publish(gateway.bus.keys.originate(), originate_message(call_id, body))
    ORIGINATES.labels("queued").inc()
    log.info(
        "outbound call queued",
        extra={"call_id": call_id, "callee": body.callee, "playbook": body.playbook},
    )
    location = f"/calls/{call_id}"
    response.headers["Location"] = location
    return CallCreated(call_id=call_id, state=CallState.QUEUED, location=location)


def originate_message(call_id: str, body: CallRequest) -> Originate:
    """The request for the edge; the only place the SIP password goes."""
    return Originate(
        call_id=call_id,
        callee=body.callee,
        caller=body.caller or "",
        playbook=body.playbook,
        username=body.sip.username,
        password=body.sip.password,
        realm=body.sip.realm,
        enable_srtp=body.sip.enable_srtp,
        headers=dict(body.headers),
        variables=dict(body.variables),
        ring_timeout=body.ring_timeout or DEFAULT_RING_TIMEOUT_S,
    )


def summary(record: CallRecord) -> CallSummary:
    return CallSummary(
        call_id=record.call_id,
        state=record.state,
        direction=record.direction,
        caller=record.caller,
        callee=record.callee,
        playbook=record.playbook,
        edge=record.edge,
        media_worker=record.media_worker,
        created=record.created,
        answered=record.answered,
        ended=record.ended,
    )


@router.get("/calls", response_model=CallList, tags=["calls"])
async def list_calls(
    state: Annotated[str | None, Query(max_length=32, description="Only calls in this state")] = None,
    gateway: Gateway = Depends(get_gateway),
) -> CallList:
    """The active calls (``calls:active``), oldest first."""
    records = await gateway.records(await gateway.store.active_ids())
    if state is not None:
        records = [r for r in records if r.state == state]
    records.sort(key=lambda r: (r.created, r.call_id))
    return CallList(calls=[summary(r) for r in records])


@router.get(
    "/calls/{call_id}",
    response_model=CallDetails,
    tags=["calls"],
    responses={404: {"model": Problem, "description": "Unknown call"}},
)
async def get_call(call_id: CallId, gateway: Gateway = Depends(get_gateway)) -> CallDetails:
    """One call's record, variables, timings and transcript (kept for a week after it ends)."""
    record = await gateway.record(call_id)
    return CallDetails(
        **summary(record).model_dump(),
        sip_call_id=record.sip_call_id,
        end_reason=record.end_reason,
        variables=record.variables,
        timings=record.timings,
        transcript=record.transcript,
    )
