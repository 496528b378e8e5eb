"""Routes of the live view of a call: ``GET /calls/{id}/events`` (SSE) and ``/calls/{id}/ws``.

The WebSocket carries the same events out, as JSON objects ``{"id", "event", "data"}``, and takes
commands in, ``{"command": "say", "text": "..."}``, each answered with ``{"ok": true, ...}`` or
``{"ok": false, "status": ..., "error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, WebSocket, WebSocketDisconnect, WebSocketException
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.status import WS_1008_POLICY_VIOLATION

from activecall.api.auth import check_client, require_client
from activecall.api.calls import PROBLEMS, CallId
from activecall.api.commands import run_command
from activecall.api.events import START_OF_STREAM, follow, sse_body, ws_event
from activecall.api.gateway import Gateway, GatewayError, gateway_of, get_gateway
from activecall.api.metrics import EVENT_STREAMS
from activecall.api.models import COMMAND_BODIES, STREAM_ID_PATTERN, Problem

WS_CLOSE_CALL_ENDED = 1000
WS_CLOSE_BASE = 4000  # 4000 + HTTP status, for errors the client should tell apart

router = APIRouter(tags=["events"])

StreamId = Annotated[str | None, Query(pattern=STREAM_ID_PATTERN, description="Resume after this event id")]


@router.get(
    "/calls/{call_id}/events",
    dependencies=[Depends(require_client)],
    response_class=StreamingResponse,
    responses={
        **PROBLEMS,
        200: {"content": {"text/event-stream": {}}, "description": "The call's events, one per SSE event"},
        404: {"model": Problem, "description": "Unknown call"},
    },
)
async def call_events(
    call_id: CallId,
    last_event_id: StreamId = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", pattern=STREAM_ID_PATTERN)
    ] = None,
    gateway: Gateway = Depends(get_gateway),
) -> StreamingResponse:
    """Server-Sent Events: ``id`` is the entry id, ``event`` the message type, ``data`` its JSON.

    Starts at the first event of the call; ``Last-Event-ID`` (which a reconnecting EventSource
    sends, and which wins over ``?last_event_id=``) resumes after that event. A keep-alive comment
    comes every 15 s; the stream ends after ``call.ended``.
    """
    await gateway.record(call_id)
    after = last_event_id_header or last_event_id or START_OF_STREAM
    return StreamingResponse(
        sse_body(gateway, call_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.websocket("/calls/{call_id}/ws")
async def call_socket(websocket: WebSocket, call_id: CallId, last_event_id: StreamId = None) -> None:
    try:
        check_client(websocket)
    except GatewayError as exc:
        raise WebSocketException(WS_1008_POLICY_VIOLATION, exc.detail) from None
    gateway = gateway_of(websocket)
    await websocket.accept()
    try:
        await gateway.record(call_id)
    except GatewayError as exc:
        await websocket.send_json(error_object(exc.status, exc.detail))
        await websocket.close(WS_CLOSE_BASE + exc.status, exc.detail)
        return
    EVENT_STREAMS.labels("websocket").inc()
    try:
        await CallSocket(websocket, gateway, call_id).run(last_event_id or START_OF_STREAM)
    finally:
        EVENT_STREAMS.labels("websocket").dec()


def error_object(status: int, error: str, detail: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "status": status, "error": error}
    if detail is not None:
        out["detail"] = detail
    return out


class CallSocket:
    """One WebSocket client: events go out while commands come in, until the call ends."""

    def __init__(self, websocket: WebSocket, gateway: Gateway, call_id: str) -> None:
        self.websocket = websocket
        self.gateway = gateway
        self.call_id = call_id
        self._send_lock = asyncio.Lock()

    async def send(self, data: dict[str, Any]) -> None:
        async with self._send_lock:  # events and command answers come from two tasks
            await self.websocket.send_json(data)

    async def run(self, after: str) -> None:
        events = asyncio.create_task(self.pump_events(after))
        commands = asyncio.create_task(self.serve_commands())
        done, pending = await asyncio.wait({events, commands}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, WebSocketDisconnect):
                raise error
        if events in done:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.websocket.close(WS_CLOSE_CALL_ENDED, "call ended")

    async def pump_events(self, after: str) -> None:
        async for entry in follow(self.gateway, self.call_id, after):
            if entry is not None:
                await self.send(ws_event(entry))

    async def serve_commands(self) -> None:
        while True:
            text = await self.websocket.receive_text()
            await self.send(await self.answer(text))

    async def answer(self, text: str) -> dict[str, Any]:
        try:
            request = json.loads(text)
        except ValueError:
            return error_object(400, "not JSON")
        if not isinstance(request, dict):
            return error_object(400, "a command is a JSON object")
        name = request.pop("command", None)
        model = COMMAND_BODIES.get(name) if isinstance(name, str) else None
        if model is None:
            return error_object(400, f"unknown command; known: {', '.join(COMMAND_BODIES)}")
        try:
            body = model.model_validate(request)
        except ValidationError as exc:
            return error_object(422, "invalid command", json.loads(exc.json(include_url=False)))
        try:
            accepted = await run_command(self.gateway, self.call_id, name, body)
        except GatewayError as exc:
            return error_object(exc.status, exc.detail)
        return accepted.model_dump(exclude_none=True)
