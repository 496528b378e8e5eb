import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from anthropic import AsyncAnthropic

from activecall.testing.anthropic_server import (
    ErrorReply,
    FakeAnthropicServer,
    Hang,
    RecordedRequest,
    Reply,
    ScriptItem,
    StreamError,
    Text,
    ToolUse,
    overloaded,
    rate_limited,
    server_error,
    text,
    tool_use,
)

MODEL = "claude-test"
HELLO = [{"role": "user", "content": "Hello"}]
API_HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
HANGUP_TOOL = {
    "name": "hangup",
    "description": "End the call.",
    "input_schema": {"type": "object", "properties": {"reason": {"type": "string"}}},
}


def client(srv: FakeAnthropicServer, max_retries: int = 0, timeout: float = 10.0) -> AsyncAnthropic:
    return AsyncAnthropic(base_url=srv.base_url, api_key="test", max_retries=max_retries, timeout=timeout)


@pytest.fixture
async def srv() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer() as server:
        yield server


# ---------------------------------------------------------------------------- streaming


async def test_stream_text_arrives_in_pieces(srv: FakeAnthropicServer) -> None:
    srv.add(text("Hello there, how can I help?", delay_s=0.001))
    async with (
        client(srv) as c,
        c.messages.stream(model=MODEL, max_tokens=100, system="Be brief.", messages=HELLO) as stream,
    ):
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    assert pieces == ["Hello", " there,", " how", " can", " I", " help?"]
    assert final.content[0].type == "text"
    assert final.content[0].text == "Hello there, how can I help?"
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.usage.output_tokens == 7
    (request,) = srv.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.body == {
        "max_tokens": 100,
        "messages": HELLO,
        "model": MODEL,
        "system": "Be brief.",
        "stream": True,
    }
    assert request.api_key == "test"
    assert "anthropic-version" in request.headers
    assert request.streaming


async def test_create_stream_event_sequence(srv: FakeAnthropicServer) -> None:
    srv.add(Reply((Text("One two"), ToolUse("hangup", {"reason": "done"}, id="toolu_1", piece_chars=6))))
    async with client(srv) as c:
        stream = await c.messages.create(
            model=MODEL, max_tokens=50, messages=HELLO, stream=True, tools=[HANGUP_TOOL]
        )
        events = [event async for event in stream]
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    partial = [e.delta.partial_json for e in events if e.type == "content_block_delta" and e.index == 1]
    assert partial == ["", '{"reas', 'on":"d', 'one"}']
    start = events[5]
    assert start.type == "content_block_start"
    assert start.content_block.type == "tool_use"
    assert (start.content_block.id, start.content_block.name) == ("toolu_1", "hangup")
    delta = events[-2]
    assert delta.type == "message_delta" and delta.delta.stop_reason == "tool_use"
    assert srv.requests[0].body["tools"] == [HANGUP_TOOL]


async def test_stream_tool_use_input_parses(srv: FakeAnthropicServer) -> None:
    arguments = {"target": "sip:+18005550100@pstn.example.com", "reason": "caller asked for a person", "n": 3}
    srv.add(tool_use("transfer", arguments, text="Connecting you now.", piece_chars=7))
    async with client(srv) as c, c.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    block = final.content[1]
    assert block.type == "tool_use"
    assert block.name == "transfer"
    assert block.input == arguments
    assert block.id.startswith("toolu_")


async def test_raw_wire_format_is_exact(srv: FakeAnthropicServer) -> None:
    srv.add(Reply((Text("Hi there", pieces=("Hi", " there")),)))
    body = {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{srv.base_url}/v1/messages", json=body, headers=API_HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == (
        "event: message_start\n"
        'data: {"type":"message_start","message":{"id":"msg_fake0000000000000002","type":"message",'
        '"role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,'
        '"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
        '"output_tokens":1}}}\n\n'
        "event: content_block_start\n"
        'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
        "event: ping\n"
        'data: {"type":"ping"}\n\n'
        "event: content_block_delta\n"
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
        "event: content_block_delta\n"
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}\n\n'
        "event: content_block_stop\n"
        'data: {"type":"content_block_stop","index":0}\n\n'
        "event: message_delta\n"
        'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        '"usage":{"output_tokens":2}}\n\n'
        "event: message_stop\n"
        'data: {"type":"message_stop"}\n\n'
    )


async def test_non_streaming_message(srv: FakeAnthropicServer) -> None:
    srv.add(tool_use("hangup", {"reason": "bye"}, text="Goodbye!"))
    async with client(srv) as c:
        message = await c.messages.create(model=MODEL, max_tokens=20, messages=HELLO)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[0].type == "text" and message.content[0].text == "Goodbye!"
    assert message.content[1].type == "tool_use" and message.content[1].input == {"reason": "bye"}
    assert message.stop_reason == "tool_use"
    assert message.id.startswith("msg_fake")
    assert not srv.requests[0].streaming


async def test_keep_alive_serves_several_requests_on_one_connection(srv: FakeAnthropicServer) -> None:
    srv.add("first", "second answer", "third")
    async with client(srv) as c:
        first = await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        streamed = [first.content[0].text]
        async with c.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
            streamed.append(await stream.get_final_text())
        streamed.append((await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)).content[0].text)
    assert streamed == ["first", "second answer", "third"]
    assert srv.connections == 1
    assert srv.pending == 0


# ---------------------------------------------------------------------------- errors and retries


async def test_rate_limit_is_retried_by_the_sdk(srv: FakeAnthropicServer) -> None:
    srv.add(rate_limited(retry_after=0.01), rate_limited(retry_after=0.01), text("Finally."))
    async with (
        client(srv, max_retries=2) as c,
        c.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as s,
    ):
        assert await s.get_final_text() == "Finally."
    assert len(srv.requests) == 3
    assert [r.headers["x-stainless-retry-count"] for r in srv.requests] == ["0", "1", "2"]


async def test_overloaded_and_server_error_are_retried(srv: FakeAnthropicServer) -> None:
    srv.add(overloaded(retry_after=0.01), server_error(retry_after=0.01), "ok")
    async with client(srv, max_retries=3) as c:
        message = await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text == "ok"
    assert len(srv.requests) == 3


@pytest.mark.parametrize(
    ("reply", "exception", "status", "error_type"),
    [
        (rate_limited(retry_after=1), anthropic.RateLimitError, 429, "rate_limit_error"),
        (server_error(), anthropic.InternalServerError, 500, "api_error"),
        (overloaded(retry_after=1), anthropic.OverloadedError, 529, "overloaded_error"),
    ],
)
async def test_errors_surface_as_sdk_exceptions(
    srv: FakeAnthropicServer,
    reply: ErrorReply,
    exception: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
) -> None:
    srv.add(reply)
    async with client(srv, max_retries=0) as c:
        with pytest.raises(exception) as info:
            async with c.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
                await stream.get_final_message()
    assert info.value.status_code == status
    assert info.value.body == {
        "type": "error",
        "error": {"type": error_type, "message": reply.message},
        "request_id": info.value.request_id,
    }
    assert info.value.request_id is not None and info.value.request_id.startswith("req_fake")
    assert info.value.response.headers.get("retry-after") == (None if reply.retry_after is None else "1")
    assert len(srv.requests) == 1


async def test_retries_exhausted(srv: FakeAnthropicServer) -> None:
    srv.add(rate_limited(), rate_limited(), "never sent")
    async with client(srv, max_retries=1) as c:
        with pytest.raises(anthropic.RateLimitError):
            await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert len(srv.requests) == 2
    assert srv.pending == 1


async def test_should_retry_false_is_obeyed(srv: FakeAnthropicServer) -> None:
    srv.add(ErrorReply(529, "Overloaded", should_retry=False), "unused")
    async with client(srv, max_retries=3) as c:
        with pytest.raises(anthropic.OverloadedError):
            await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert len(srv.requests) == 1


async def test_error_event_in_the_middle_of_a_stream(srv: FakeAnthropicServer) -> None:
    srv.add(StreamError(text="Let me check"))
    pieces: list[str] = []
    async with client(srv) as c:
        with pytest.raises(anthropic.APIStatusError) as info:
            async with c.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
                async for piece in stream.text_stream:
                    pieces.append(piece)
    assert pieces == ["Let", " me", " check"]
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}


async def test_stream_error_without_stream_is_an_http_error(srv: FakeAnthropicServer) -> None:
    srv.add(StreamError(text="x"))
    async with client(srv) as c:
        with pytest.raises(anthropic.OverloadedError):
            await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)


async def test_hang_times_out(srv: FakeAnthropicServer) -> None:
    srv.add(Hang())
    async with client(srv, timeout=0.2) as c:
        with pytest.raises(anthropic.APITimeoutError):
            await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert len(srv.requests) == 1


async def test_hang_after_partial_stream(srv: FakeAnthropicServer) -> None:
    srv.add(Hang(partial="Just a"))
    pieces: list[str] = []
    async with client(srv, timeout=0.3) as c:
        # Mid-stream, the SDK lets the transport's own timeout through rather than APITimeoutError.
        with pytest.raises(httpx2.ReadTimeout):
            async with c.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
                async for piece in stream.text_stream:
                    pieces.append(piece)
    assert pieces == ["Just", " a"]


async def test_empty_script_answers_a_clear_error(srv: FakeAnthropicServer) -> None:
    async with client(srv, max_retries=2) as c:
        with pytest.raises(anthropic.BadRequestError, match="no scripted reply left for request #1"):
            await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert len(srv.requests) == 1


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [
        ("/v1/messages", {"model": "m", "messages": []}, API_HEADERS, 400, "max_tokens: Field required"),
        (
            "/v1/messages",
            {"model": "m", "max_tokens": "5", "messages": []},
            API_HEADERS,
            400,
            "max_tokens: Input should be a valid int",
        ),
        (
            "/v1/messages",
            [],
            API_HEADERS,
            400,
            "There was an error parsing the body of your request: expected a JSON object",
        ),
        ("/v1/messages", {}, {"anthropic-version": "2023-06-01"}, 401, "x-api-key header is required"),
        ("/v1/messages", {}, {"x-api-key": "k"}, 400, "anthropic-version: header is required"),
        ("/v1/complete", {}, API_HEADERS, 404, "Not Found: /v1/complete"),
    ],
)
async def test_invalid_requests_are_refused_like_the_api(
    srv: FakeAnthropicServer, path: str, body: Any, headers: dict[str, str], status: int, message: str
) -> None:
    srv.add("kept for later")
    async with httpx.AsyncClient() as http:
        response = await http.post(srv.base_url + path, json=body, headers=headers)
    assert response.status_code == status
    data = response.json()
    assert data == {
        "type": "error",
        "error": {"type": data["error"]["type"], "message": message},
        "request_id": response.headers["request-id"],
    }
    assert (
        data["error"]["type"]
        == {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}[status]
    )
    assert srv.pending == 1
    assert srv.requests[0].body == body


async def test_chunked_request_body_and_bad_request_line(srv: FakeAnthropicServer) -> None:
    srv.add("chunked ok")
    payload = json.dumps({"model": "m", "max_tokens": 5, "messages": HELLO}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield payload[:10]
        yield payload[10:]

    async with httpx.AsyncClient() as http:
        response = await http.post(f"{srv.base_url}/v1/messages", content=chunks(), headers=API_HEADERS)
    assert response.json()["content"] == [{"type": "text", "text": "chunked ok"}]
    assert srv.requests[0].headers["transfer-encoding"] == "chunked"
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(b"NONSENSE\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"message":"bad request line \'NONSENSE\'"' in answer


# ---------------------------------------------------------------------------- scripting


async def test_callable_picks_the_reply_from_the_request() -> None:
    def pick(request: RecordedRequest) -> ScriptItem:
        said = request.body["messages"][-1]["content"]
        if "goodbye" in said:
            return tool_use("hangup", {"reason": "goodbye"})
        return text(f"You said: {said}")

    async with FakeAnthropicServer(pick) as srv, client(srv) as c:
        first = await c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        second = await c.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "ok goodbye"}]
        )
        with pytest.raises(RuntimeError):
            srv.add("x")
    assert first.content[0].type == "text" and first.content[0].text == "You said: Hello"
    assert second.stop_reason == "tool_use"


async def test_async_callable() -> None:
    async def pick(request: RecordedRequest) -> ScriptItem:
        await asyncio.sleep(0)
        return text(str(request.body["max_tokens"]))

    async with FakeAnthropicServer(pick) as srv, client(srv) as c:
        message = await c.messages.create(model=MODEL, max_tokens=42, messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text == "42"


def test_background_thread_with_the_sync_client() -> None:
    with FakeAnthropicServer([rate_limited(retry_after=0.01), "From a thread."]) as srv:
        sync = anthropic.Anthropic(base_url=srv.base_url, api_key="test", max_retries=1)
        with sync.messages.stream(model=MODEL, max_tokens=5, messages=HELLO) as stream:
            pieces = list(stream.text_stream)
        sync.close()
        assert pieces == ["From", " a", " thread."]
        assert len(srv.requests) == 2
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.base_url + "/v1/messages")


def test_background_thread_stops_with_a_hanging_request() -> None:
    srv = FakeAnthropicServer([Hang()]).start_in_thread()
    sync = anthropic.Anthropic(base_url=srv.base_url, api_key="test", max_retries=0, timeout=0.2)
    with pytest.raises(anthropic.APITimeoutError):
        sync.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    sync.close()
    srv.stop_thread()
    assert len(srv.requests) == 1


def test_text_deltas() -> None:
    assert Text("  Hi  there ").deltas() == ("  Hi", "  there ")
    assert Text("").deltas() == ()
    assert Text("a b", pieces=("a", " b")).deltas() == ("a", " b")
    with pytest.raises(ValueError, match="must join"):
        Text("ab", pieces=("a",))
    assert ToolUse("t", {}).deltas() == ("", "{}")


def test_another_process_can_use_the_threaded_server() -> None:
    script = "\n".join(
        [
            "import json, sys, urllib.request",
            "body = {'model': 'm', 'max_tokens': 5, 'messages': [{'role': 'user', 'content': 'hi'}]}",
            "headers = {'x-api-key': 'k', 'anthropic-version': '2023-06-01'}",
            "url = sys.argv[1] + '/v1/messages'",
            "request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)",
            "print(json.load(urllib.request.urlopen(request))['content'][0]['text'])",
        ]
    )
    with FakeAnthropicServer(["Across processes."]) as srv:
        result = subprocess.run(
            [sys.executable, "-c", script, srv.base_url],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    assert result.stdout == "Across processes.\n"
    assert srv.requests[0].headers["user-agent"].startswith("Python-urllib/")
