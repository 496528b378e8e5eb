"""A local HTTP/1.1 server that speaks Anthropic's Messages API, so tests can drive the real client.

``POST /v1/messages`` answers from a script: a queue of replies, or a function choosing one per request.
With ``"stream": true`` a reply is sent as Server-Sent Events in the order and shape of the real API
(``message_start``, ``content_block_start``, ``ping``, ``content_block_delta`` with ``text_delta`` or
``input_json_delta``, ``content_block_stop``, ``message_delta``, ``message_stop``); otherwise as one JSON
message. Scripted failures are HTTP errors with the API's error body and ``retry-after`` header, an error
event in the middle of a stream, or a hang that never answers. Every request is recorded.

Use it inside a running loop::

    async with FakeAnthropicServer([text("Hello there!")]) as srv:
        client = AsyncAnthropic(base_url=srv.base_url, api_key="test", max_retries=0)

or from synchronous code and other processes, with the server in a thread of its own::

    with FakeAnthropicServer([rate_limited(), text("ok")]) as srv:
        subprocess.run([...], env={"ANTHROPIC_BASE_URL": srv.base_url, ...})

Only the standard library is used, so any service's tests can import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeAlias

log = logging.getLogger("activecall.testing.anthropic_server")

MESSAGES_PATH: Final = "/v1/messages"
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
# The error ``type`` the API sends with each status code.
ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_REASONS: Final[Mapping[int, str]] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    529: "Site Overloaded",
}


# ---------------------------------------------------------------------------- script


@dataclass(frozen=True)
class Text:
    """A text block. Streamed word by word (each piece carries the space before it), or in ``pieces``."""

    text: str
    pieces: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.pieces is not None and "".join(self.pieces) != self.text:
            raise ValueError("Text.pieces must join to Text.text")

    def deltas(self) -> tuple[str, ...]:
        if self.pieces is not None:
            return self.pieces
        words = re.findall(r"\s*\S+", self.text)
        tail = self.text[len("".join(words)) :]
        if tail:
            words = [*words[:-1], words[-1] + tail] if words else [tail]
        return tuple(words)


@dataclass(frozen=True)
class ToolUse:
    """A tool_use block; its input is streamed as JSON text cut in ``piece_chars`` pieces."""

    name: str
    input: Mapping[str, Any]
    id: str | None = None
    piece_chars: int = 10

    def input_json(self) -> str:
        return json.dumps(self.input, separators=(",", ":"), ensure_ascii=False)

    def deltas(self) -> tuple[str, ...]:
        encoded = self.input_json()
        # The API opens every tool input with an empty piece.
        return ("", *(encoded[i : i + self.piece_chars] for i in range(0, len(encoded), self.piece_chars)))


Block: TypeAlias = Text | ToolUse


@dataclass(frozen=True)
class Reply:
    """A successful answer. ``delay_s`` is slept between streamed deltas; ``stop_reason`` defaults to
    ``tool_use`` when there is a tool block, else ``end_turn``."""

    content: tuple[Block, ...]
    delay_s: float = 0.0
    stop_reason: str | None = None

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.content) else "end_turn"


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error with the API's error body. ``retry_after`` (seconds, fractions allowed so tests
    stay fast) becomes the ``retry-after`` header; ``should_retry`` the ``x-should-retry`` header."""

    status: int
    message: str
    type: str | None = None
    retry_after: float | None = None
    should_retry: bool | None = None

    @property
    def error_type(self) -> str:
        return self.type or ERROR_TYPES.get(self.status, "api_error")

    def body(self, request_id: str) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": self.error_type, "message": self.message},
            "request_id": request_id,
        }


@dataclass(frozen=True)
class StreamError:
    """A stream that starts well, sends ``text``, then an ``error`` event (as the API does when it
    becomes overloaded mid-answer). A non-streaming request gets the error as an HTTP status."""

    text: str = ""
    error: ErrorReply = field(default_factory=lambda: ErrorReply(529, "Overloaded"))


@dataclass(frozen=True)
class Hang:
    """Never finish. For a streaming request, ``partial`` text is sent first, then nothing more."""

    partial: str = ""


ScriptItem: TypeAlias = Reply | ErrorReply | StreamError | Hang | str
Picker: TypeAlias = Callable[["RecordedRequest"], ScriptItem | Awaitable[ScriptItem]]


def text(text: str, *, delay_s: float = 0.0, pieces: Sequence[str] | None = None) -> Reply:
    """A text answer."""
    return Reply((Text(text, tuple(pieces) if pieces is not None else None),), delay_s=delay_s)


def tool_use(
    name: str,
    input: Mapping[str, Any],
    *,
    text: str | None = None,
    delay_s: float = 0.0,
    piece_chars: int = 10,
) -> Reply:
    """An answer calling one tool, optionally after some text."""
    blocks: list[Block] = [Text(text)] if text is not None else []
    blocks.append(ToolUse(name, input, piece_chars=piece_chars))
    return Reply(tuple(blocks), delay_s=delay_s)


def rate_limited(retry_after: float | None = 0.01) -> ErrorReply:
    return ErrorReply(
        429, "Number of request tokens has exceeded your per-minute rate limit", retry_after=retry_after
    )


def server_error(retry_after: float | None = None) -> ErrorReply:
    return ErrorReply(500, "Internal server error", retry_after=retry_after)


def overloaded(retry_after: float | None = 0.01) -> ErrorReply:
    return ErrorReply(529, "Overloaded", retry_after=retry_after)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: header names in lower case, the body parsed from JSON (None if not)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any

    @property
    def api_key(self) -> str | None:
        """The credential sent, as ``x-api-key`` or as an ``authorization: Bearer`` token."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True


class _ProtocolError(Exception):
    """A request this server cannot read; answered with 400 and the connection closed."""


# ---------------------------------------------------------------------------- HTTP


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _ProtocolError("truncated request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _ProtocolError("request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _ProtocolError(f"bad request line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _ProtocolError(f"bad header line {line!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    raw = await _read_body(reader, headers)
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return RecordedRequest(parts[0], parts[1], headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or "0")
    if length > MAX_BODY_BYTES:
        raise _ProtocolError("request body too large")
    return await reader.readexactly(length) if length else b""


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _sse_event(data: Mapping[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: ".encode() + _json_bytes(data) + b"\n\n"


def _chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def _estimate_tokens(text: str) -> int:
    # About four characters a token; only needs to be stable and plausible.
    return max(1, len(text) // 4)


# ---------------------------------------------------------------------------- server


class FakeAnthropicServer:
    """Messages API on 127.0.0.1 and a free port. ``requests`` holds every request received."""

    def __init__(
        self,
        script: Iterable[ScriptItem] | Picker = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ping: bool = True,
        require_api_key: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.ping = ping
        self.require_api_key = require_api_key
        self.requests: list[RecordedRequest] = []
        self.connections = 0
        self._picker: Picker | None = None
        self._queue: deque[ScriptItem] = deque()
        if callable(script):
            self._picker = script
        else:
            self._queue.extend([script] if isinstance(script, str) else script)
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to the client (it appends ``/v1/messages``)."""
        return f"http://{self.host}:{self.port}"

    def add(self, *items: ScriptItem) -> None:
        """Queue more replies (thread-safe)."""
        if self._picker is not None:
            raise RuntimeError("this server picks replies with a function; there is no queue")
        self._queue.extend(items)

    @property
    def pending(self) -> int:
        """Replies queued and not yet sent."""
        return len(self._queue)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.split("?")[0] == MESSAGES_PATH]

    # ------------------------------------------------------------------ lifecycle, in a running loop

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEADER_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Closing the transports ends idle and hanging connections with an EOF; a handler still
        # sleeping between deltas is cancelled. Only then does wait_closed return: from Python 3.12
        # on it also waits for the connections.
        for writer in self._connections.values():
            writer.close()
        tasks = list(self._connections)
        _, pending = await asyncio.wait(tasks, timeout=1.0) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FakeAnthropicServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ lifecycle, in a thread

    def start_in_thread(self, timeout: float = 5.0) -> FakeAnthropicServer:
        """Run the server on an event loop in a daemon thread; returns once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-anthropic", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("fake Anthropic server did not start")
        if failure:
            raise failure[0]
        return self

    def stop_thread(self, timeout: float = 5.0) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeAnthropicServer:
        return self.start_in_thread()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_thread()

    # ------------------------------------------------------------------ connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        self.connections += 1
        try:
            while await self._exchange(reader, writer):
                pass
        except _ProtocolError as exc:
            await self._send_json(writer, 400, ErrorReply(400, str(exc)).body(self._new_id("req")), {})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a connection; ending quietly keeps asyncio's stream callback from
            # logging the cancellation as an error.
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            del self._connections[task]

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is done."""
        request = await _read_request(reader)
        if request is None:
            return False
        self.requests.append(request)
        keep_alive = request.headers.get("connection", "").lower() != "close"
        problem = self._check(request)
        if problem is not None:
            await self._send_error(writer, problem)
            return keep_alive
        item = await self._next_item(request)
        if isinstance(item, str):
            item = text(item)
        if isinstance(item, Hang):
            await self._hang(reader, writer, request, item)
            return False
        if isinstance(item, ErrorReply):
            await self._send_error(writer, item)
        elif isinstance(item, StreamError) and not request.streaming:
            await self._send_error(writer, item.error)
        elif isinstance(item, StreamError):
            await self._stream_failure(writer, request, item)
        elif request.streaming:
            await self._stream(writer, request, item)
        else:
            await self._send_message(writer, request, item)
        return keep_alive

    def _check(self, request: RecordedRequest) -> ErrorReply | None:
        """The API's own refusals, before the script is consulted."""
        if request.path.split("?")[0] != MESSAGES_PATH:
            return ErrorReply(404, f"Not Found: {request.path}")
        if request.method != "POST":
            return ErrorReply(405, f"Method {request.method} not allowed", type="invalid_request_error")
        if self.require_api_key and not request.api_key:
            return ErrorReply(401, "x-api-key header is required")
        if "anthropic-version" not in request.headers:
            return ErrorReply(400, "anthropic-version: header is required")
        body = request.body
        if not isinstance(body, dict):
            return ErrorReply(
                400, "There was an error parsing the body of your request: expected a JSON object"
            )
        for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if name not in body:
                return ErrorReply(400, f"{name}: Field required")
            if not isinstance(body[name], kind) or isinstance(body[name], bool):
                return ErrorReply(400, f"{name}: Input should be a valid {kind.__name__}")
        return None

    async def _next_item(self, request: RecordedRequest) -> ScriptItem:
        if self._picker is not None:
            chosen = self._picker(request)
            return await chosen if inspect.isawaitable(chosen) else chosen
        if not self._queue:
            n = len(self.requests)
            return ErrorReply(
                400, f"fake server: no scripted reply left for request #{n}", should_retry=False
            )
        return self._queue.popleft()

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):016d}"

    # ------------------------------------------------------------------ answers

    async def _send_json(
        self, writer: asyncio.StreamWriter, status: int, data: Any, extra: Mapping[str, str]
    ) -> None:
        payload = _json_bytes(data)
        headers = {
            "content-type": "application/json",
            "content-length": str(len(payload)),
            "request-id": str(data.get("request_id") or data.get("id")),
            **extra,
        }
        writer.write(_head(status, headers) + payload)
        await writer.drain()

    async def _send_error(self, writer: asyncio.StreamWriter, error: ErrorReply) -> None:
        extra: dict[str, str] = {}
        if error.retry_after is not None:
            extra["retry-after"] = f"{error.retry_after:g}"
        if error.should_retry is not None:
            extra["x-should-retry"] = "true" if error.should_retry else "false"
        await self._send_json(writer, error.status, error.body(self._new_id("req")), extra)

    async def _send_message(
        self, writer: asyncio.StreamWriter, request: RecordedRequest, reply: Reply
    ) -> None:
        content = [self._block_json(block, full=True) for block in reply.content]
        message = self._message(request, reply, content)
        message["usage"]["output_tokens"] = self._output_tokens(reply)
        await self._send_json(writer, 200, message, {"request-id": self._new_id("req")})

    def _message(self, request: RecordedRequest, reply: Reply | None, content: list[Any]) -> dict[str, Any]:
        body = request.body
        prompt = json.dumps([body.get("system"), body.get("messages"), body.get("tools")])
        return {
            "id": self._new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": reply.effective_stop_reason if reply is not None else None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": _estimate_tokens(prompt),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }

    def _block_json(self, block: Block, *, full: bool) -> dict[str, Any]:
        if isinstance(block, Text):
            return {"type": "text", "text": block.text if full else ""}
        return {
            "type": "tool_use",
            "id": block.id or self._new_id("toolu"),
            "name": block.name,
            "input": dict(block.input) if full else {},
        }

    @staticmethod
    def _output_tokens(reply: Reply) -> int:
        return (
            sum(_estimate_tokens(b.text if isinstance(b, Text) else b.input_json()) for b in reply.content)
            or 1
        )

    def _events(self, request: RecordedRequest, reply: Reply) -> Iterator[tuple[dict[str, Any], bool]]:
        """The stream of a reply as (event, is_delta) pairs."""
        yield {"type": "message_start", "message": self._message(request, None, [])}, False
        for index, block in enumerate(reply.content):
            start = {
                "type": "content_block_start",
                "index": index,
                "content_block": self._block_json(block, full=False),
            }
            yield start, False
            if index == 0 and self.ping:
                yield {"type": "ping"}, False
            kind, key = (
                ("text_delta", "text") if isinstance(block, Text) else ("input_json_delta", "partial_json")
            )
            for piece in block.deltas():
                delta = {"type": "content_block_delta", "index": index, "delta": {"type": kind, key: piece}}
                yield delta, True
            yield {"type": "content_block_stop", "index": index}, False
        stop = {"stop_reason": reply.effective_stop_reason, "stop_sequence": None}
        yield (
            {"type": "message_delta", "delta": stop, "usage": {"output_tokens": self._output_tokens(reply)}},
            False,
        )
        yield {"type": "message_stop"}, False

    async def _start_stream(self, writer: asyncio.StreamWriter) -> None:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            "request-id": self._new_id("req"),
        }
        writer.write(_head(200, headers))
        await writer.drain()

    async def _send_events(
        self, writer: asyncio.StreamWriter, events: Iterable[tuple[dict[str, Any], bool]], delay_s: float
    ) -> None:
        first_delta = True
        for event, is_delta in events:
            if is_delta and not first_delta and delay_s > 0:
                await asyncio.sleep(delay_s)
            first_delta = first_delta and not is_delta
            writer.write(_chunk(_sse_event(event)))
            await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, request: RecordedRequest, reply: Reply) -> None:
        await self._start_stream(writer)
        await self._send_events(writer, self._events(request, reply), reply.delay_s)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    def _partial_events(
        self, request: RecordedRequest, partial: str
    ) -> Iterator[tuple[dict[str, Any], bool]]:
        """A text answer cut off after ``partial``: no block stop, no message stop."""
        for event, is_delta in self._events(request, text(partial)):
            if event["type"] == "content_block_stop":
                return
            yield event, is_delta

    async def _stream_failure(
        self, writer: asyncio.StreamWriter, request: RecordedRequest, item: StreamError
    ) -> None:
        await self._start_stream(writer)
        await self._send_events(writer, self._partial_events(request, item.text), 0.0)
        writer.write(_chunk(_sse_event(item.error.body(self._new_id("req")))))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _hang(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: RecordedRequest, item: Hang
    ) -> None:
        if request.streaming and item.partial:
            await self._start_stream(writer)
            await self._send_events(writer, self._partial_events(request, item.partial), 0.0)
        # Hold the connection until the client gives up (EOF) or the server stops (cancellation).
        while await reader.read(65536):
            pass
