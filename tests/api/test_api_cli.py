"""The API client commands of `activecall`: pieces that need no server."""

from __future__ import annotations

import time

import pytest

from activecall.cli import api_url, build_parser, format_event, parse_sse


@pytest.mark.parametrize(
    ("http_addr", "url"),
    [
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("[::]:8080", "http://[::1]:8080"),
        ("api.internal:80", "http://api.internal:80"),
    ],
)
def test_the_default_api_url_comes_from_http_addr(http_addr: str, url: str) -> None:
    assert api_url(http_addr) == url


def test_parse_sse_follows_the_event_stream_format() -> None:
    text = (
        "retry: 2000\n\n"
        ": keep-alive\n\n"
        'id: 1-0\nevent: call.state\ndata: {"state":"queued"}\n\n'
        "id:2-0\nevent:call.ended\ndata: {}\n\n"
        "data: line one\ndata: line two\n\n"
        "id: 3-0\nevent: cut.off\ndata: {}"  # no blank line: never dispatched
    )
    assert list(parse_sse(text.split("\n"))) == [
        ("1-0", "call.state", '{"state":"queued"}'),
        ("2-0", "call.ended", "{}"),
        ("2-0", "message", "line one\nline two"),
    ]


def test_format_event_is_one_readable_line() -> None:
    ts = 1700000000.125
    clock = time.strftime("%H:%M:%S", time.localtime(ts))
    line = format_event(
        "transcript.final",
        {
            "call_id": "c1",
            "ts": ts,
            "text": "hello there",
            "confidence": 0.5,
            "speaker": "caller",
            "extra": {"a": 1},
        },
    )
    assert (
        line
        == f'{clock}.125  transcript.final   text="hello there" confidence=0.5 speaker=caller extra={{"a":1}}'
    )
    assert (
        format_event("call.hangup", {"ts": ts, "reason": ""}) == f'{clock}.125  call.hangup        reason=""'
    )


def test_the_api_commands_parse_their_options() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "call",
            "sip:+18005551234@x.pstn.twilio.com",
            "--playbook",
            "sales.md",
            "--srtp",
            "--api",
            "http://h:1",
        ]
    )
    assert (args.uri, args.playbook, args.srtp, args.api, args.token) == (
        "sip:+18005551234@x.pstn.twilio.com",
        "sales.md",
        True,
        "http://h:1",
        None,
    )
    assert parser.parse_args(["tail", "abc", "--token", "t"]).token == "t"
    assert parser.parse_args(["hangup", "abc"]).reason == "api"
    assert parser.parse_args(["calls", "--state", "answered"]).state == "answered"
    with pytest.raises(SystemExit):
        parser.parse_args(["call", "sip:x@y"])  # --playbook is required
