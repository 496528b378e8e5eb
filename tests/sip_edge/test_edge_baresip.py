"""A real phone (baresip) calls the edge over TLS with mandatory SDES SRTP, as a secure trunk would."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from sip_harness import EdgeFactory, make_certificate
from test_edge_sipp import wait_event

from activecall.messages import CallAnswered, CallEnded, Hangup, Originate
from activecall.sip_edge.sip.transport.transport import Transport
from activecall.testing.baresip import BaresipPhone
from activecall.testing.redis_server import free_port


async def test_baresip_over_tls_with_srtp_is_answered_with_crypto_and_its_bye_is_answered(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    harness = await start_edge(tls_port=free_port(), tls_cert_file=str(cert), tls_key_file=str(key))
    phone = BaresipPhone(tmp_path / "baresip", user="caller", sip_trace=True)
    await asyncio.to_thread(phone.start)
    try:
        port = harness.port(Transport.TLS)
        response = await asyncio.to_thread(phone.dial, f"sip:+15550004444@127.0.0.1:{port};transport=tls")
        assert response["ok"], response
        await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED")
        (leg,) = harness.responder.legs.values()
        answered = await wait_event(harness, leg.call_id, CallAnswered)
        await asyncio.to_thread(phone.hangup)
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED")
        ended = await wait_event(harness, leg.call_id, CallEnded)
    finally:
        await asyncio.to_thread(phone.stop)
    trace = phone.log_text()
    # The 200 OK's answer, as baresip received it, carries the media worker's key; baresip enabled SRTP.
    assert "RTP/SAVP 0 101" in trace, trace[-3000:]
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{leg.crypto_key}" in trace, trace[-3000:]
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in trace
    assert leg.srtp
    (update,) = leg.updates
    assert update.remote_crypto_suite == "AES_CM_128_HMAC_SHA1_80"
    assert len(base64.b64decode(update.remote_crypto_key)) == 30
    assert (answered.caller, answered.callee) == ("caller", "+15550004444")
    assert (ended.reason, ended.by) == ("remote hangup", "remote")


async def test_the_edge_hangs_up_a_tls_call_over_the_callers_connection(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    harness = await start_edge(tls_port=free_port(), tls_cert_file=str(cert), tls_key_file=str(key))
    phone = BaresipPhone(tmp_path / "baresip", user="caller")
    await asyncio.to_thread(phone.start)
    try:
        port = harness.port(Transport.TLS)
        await asyncio.to_thread(phone.dial, f"sip:+15550004444@127.0.0.1:{port};transport=tls")
        await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED")
        (leg,) = harness.responder.legs.values()
        await wait_event(harness, leg.call_id, CallAnswered)
        control = harness.bus.keys.edge_control("edge-test")
        await harness.bus.publish(control, Hangup(call_id=leg.call_id, reason="goodbye", by="llm"))
        closed = await asyncio.to_thread(phone.wait_event, "CALL_CLOSED")
        ended = await wait_event(harness, leg.call_id, CallEnded)
    finally:
        await asyncio.to_thread(phone.stop)
    assert closed["param"] == "Connection reset by peer"  # baresip's words for "the peer sent BYE"
    assert (ended.reason, ended.by) == ("goodbye", "llm")
    assert harness.responder.closed == 1


async def test_an_srtp_call_placed_over_tls_is_answered_by_the_phone(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path)
    combined = tmp_path / "baresip.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    harness = await start_edge(tls_port=free_port(), tls_cert_file=str(cert), tls_key_file=str(key))
    phone = BaresipPhone(
        tmp_path / "baresip", user="callee", auto_answer=True, certificate=combined, sip_trace=True
    )
    await asyncio.to_thread(phone.start)
    try:
        callee = f"sip:callee@127.0.0.1:{phone.tls_port};transport=tls"
        message = Originate(call_id="out-srtp", callee=callee, caller="+14155550100", enable_srtp=True)
        await harness.bus.publish(harness.bus.keys.originate(), message)
        await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED")
        await wait_event(harness, "out-srtp", CallAnswered)
        control = harness.bus.keys.edge_control("edge-test")
        await harness.bus.publish(control, Hangup(call_id="out-srtp", by="api"))
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED")
        ended = await wait_event(harness, "out-srtp", CallEnded)
    finally:
        await asyncio.to_thread(phone.stop)
    (leg,) = harness.responder.legs.values()
    trace = phone.log_text()
    assert leg.srtp
    assert "m=audio 40000 RTP/SAVP 0 8 101" in trace, trace[-3000:]
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{leg.crypto_key}" in trace
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in trace
    (update,) = leg.updates
    assert update.remote_crypto_suite == "AES_CM_128_HMAC_SHA1_80"
    assert (ended.reason, ended.by) == ("hangup", "api")
