"""Outbound calls, barge-in by speech and by key press, and the DTMF menu, with a real phone (baresip
over TLS with mandatory SRTP)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from e2e_calls import (
    CallerScript,
    CallStreams,
    call_streams,
    find_call,
    heard_matches,
    report,
    wait_events,
    wait_record,
)

from activecall.audio import ncc_peak, read_wav
from activecall.messages import BargeIn, CallEnded, DtmfReceived, PlaybackStarted
from activecall.testing.baresip import BaresipPhone
from activecall.testing.system import System

RATE = 8000


def playing(turns: int) -> Callable[[CallStreams], bool]:
    """True once ``turns`` turns have started playing."""
    return lambda streams: len(streams.of_type(PlaybackStarted)) >= turns


def heard_by(phone: BaresipPhone) -> bytes:
    heard_file, _ = phone.dumps()
    assert heard_file is not None
    heard, rate = read_wav(heard_file)
    assert rate == RATE
    return heard


def test_post_call_rings_a_phone_that_answers_and_hears_the_greeting(system: System, tmp_path: Path) -> None:
    phone = BaresipPhone(tmp_path / "phone", None, "callee", auto_answer=True, certificate=system.certificate)
    phone.start()
    try:
        callee = f"sip:callee@127.0.0.1:{phone.tls_port};transport=tls"
        body = {"callee": callee, "playbook": "greeting.md", "sip": {"enableSrtp": True}}
        answer = httpx.post(f"{system.api}/call", json=body, timeout=10)
        assert answer.status_code in (200, 201), answer.text
        call_id = answer.json()["call_id"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        assert phone.wait_event("CALL_MENC")["param"] == "0,audio,AES_CM_128_HMAC_SHA1_80"
        wait_events(system.redis_url, call_id, playing(1), 15, "the greeting playing")
        time.sleep(6)  # the greeting lasts about 4 s
        assert httpx.post(f"{system.api}/calls/{call_id}/hangup", timeout=10).status_code == 202
        phone.wait_event("CALL_CLOSED", 10)
    finally:
        phone.stop()
    record = wait_record(system.redis_url, call_id, lambda r: r.state == "ended")
    assert record.direction == "outbound" and record.answered > 0 and record.end_reason == "api"
    streams = call_streams(system.redis_url, call_id)
    assert heard_matches(heard_by(phone), streams.turn_audio("greeting"), "outbound greeting") >= 0.9


def test_a_caller_talking_over_the_greeting_cuts_it(system: System, tmp_path: Path) -> None:
    wav = CallerScript([1.5, "What are your opening hours?", 12.0]).write(tmp_path / "caller.wav")
    phone = BaresipPhone(tmp_path / "phone", wav, "interrupter", certificate=system.certificate).start()
    try:
        assert phone.dial(f"sip:agent@127.0.0.1:{system.tls_port};transport=tls")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        call_id = find_call(system.redis_url, "interrupter").call_id
        streams = wait_events(
            system.redis_url,
            call_id,
            lambda s: len(s.of_type(PlaybackStarted)) >= 2,
            20,
            "the answer playing",
        )
        time.sleep(5)
        phone.hangup()
        phone.wait_event("CALL_CLOSED", 10)
    finally:
        phone.stop()
    streams = call_streams(system.redis_url, call_id)
    (barge_in,) = [b for b in streams.of_type(BargeIn) if b.turn_id == "greeting"]
    greeting = streams.turn_audio("greeting")
    played = barge_in.played_ms * RATE // 1000 * 2
    report(f"barge-in after {barge_in.played_ms} ms of a {len(greeting) // 2 * 1000 // RATE} ms greeting")
    assert 0 < played < len(greeting) - RATE  # cut at least a second before its end

    heard = heard_by(phone)
    head_peak = heard_matches(heard, greeting[: played - RATE // 5], "greeting before the barge-in")
    rest = greeting[played + RATE // 2 :]  # from half a second after the cut: never sent
    rest_peak, _ = ncc_peak(heard, rest)
    report(f"the rest of the greeting vs what the phone heard, ncc {rest_peak:.3f}")
    assert head_peak >= 0.9 and rest_peak < 0.5
    record = wait_record(system.redis_url, call_id, lambda r: r.state == "ended")
    agent = [line["text"] for line in record.transcript if line["speaker"] == "agent"]
    assert len(agent) >= 2 and "Monday to Friday" in agent[1], agent


def test_dtmf_digits_drive_the_phone_menu(system: System, tmp_path: Path) -> None:
    phone = BaresipPhone(tmp_path / "phone", None, "presser", certificate=system.certificate).start()
    try:
        assert phone.dial(f"sip:menu@127.0.0.1:{system.tls_port};transport=tls")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        call_id = find_call(system.redis_url, "presser").call_id
        wait_events(system.redis_url, call_id, playing(1), 15, "the menu greeting playing")
        time.sleep(2)
        phone.send_digits("1")  # while the menu plays: the key cuts it
        wait_events(system.redis_url, call_id, playing(2), 5, "the billing scene playing")
        phone.send_digits("0")
        phone.wait_event("CALL_CLOSED", 30)  # digit 0: goodbye, then the agent hangs up
    finally:
        phone.stop()
    record = wait_record(system.redis_url, call_id, lambda r: r.state == "ended")
    streams = call_streams(system.redis_url, call_id)
    digits = [d.digit for d in streams.of_type(DtmfReceived)]
    agent = [line["text"] for line in record.transcript if line["speaker"] == "agent"]
    report(f"digits {digits} -> the agent said {agent}")
    assert digits == ["1", "0"]
    cut = streams.of_type(BargeIn)[0]  # digit 1 cut the menu; digit 0 may cut the billing scene too
    assert cut.turn_id == "greeting" and 1500 < cut.played_ms < 4000, cut
    assert agent[1].startswith("Billing.") and agent[-1].startswith(
        "Thank you for calling Example Corp. Goodbye"
    )
    (ended,) = streams.of_type(CallEnded)
    assert record.playbook == "ivr.md" and ended.by != "remote", ended
