"""The edge with a scripted UDP phone: admission (ACL, capacity), SDP answers, and what happens in a call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from sip_harness import AUDIO_OFFER, EdgeFactory, EdgeHarness, RawPhone
from test_edge_sipp import states, wait_event

from activecall.config import AclSettings
from activecall.messages import CallAnswered, CallEnded, DtmfReceived, MediaTimeout, TransferRequested


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
async def phone_factory() -> AsyncIterator[list[RawPhone]]:
    phones: list[RawPhone] = []
    yield phones
    for phone in phones:
        phone.close()


async def call_up(harness: EdgeHarness, phones: list[RawPhone]) -> tuple[RawPhone, str]:
    """A phone whose INVITE was answered and ACKed; returns it and the call id."""
    phone = await RawPhone.open(harness.port())
    phones.append(phone)
    phone.invite()
    ok = await phone.final()
    assert ok.status == 200
    phone.ack()
    (leg,) = harness.responder.legs.values()
    await wait_event(harness, leg.call_id, CallAnswered)
    return phone, leg.call_id


async def test_a_denied_source_gets_403_and_is_counted(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    harness = await start_edge(acl=AclSettings(allow=["10.0.0.0/8"]))
    before = metric("activecall_sip_acl_rejections_total")
    phone = await RawPhone.open(harness.port())
    phone_factory.append(phone)
    phone.invite()
    refusal = await phone.final()
    assert refusal.status == 403
    phone.ack()
    assert metric("activecall_sip_acl_rejections_total") - before == 1
    assert harness.responder.opened == 0
    assert await harness.edge.store.active_ids() == []


async def test_without_media_capacity_the_edge_answers_503_with_retry_after(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    harness = await start_edge(media_capacity=0)
    phone = await RawPhone.open(harness.port())
    phone_factory.append(phone)
    phone.invite()
    refusal = await phone.final()
    assert (refusal.status, refusal.headers.get("Retry-After")) == (503, "5")


async def test_a_session_role_without_room_refuses_the_call_and_each_refusal_is_counted_once(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    """Media has room, the asr, llm and tts stand-ins have one session's room: one call is answered,
    the next two are refused with 503 and counted once each, by the first role without room."""
    harness = await start_edge(session_capacity=1)
    labels = {"direction": "inbound", "reason": "asr"}
    before = metric("activecall_sip_capacity_rejections_total", labels)
    await call_up(harness, phone_factory)
    for _ in range(2):
        phone = await RawPhone.open(harness.port())
        phone_factory.append(phone)
        phone.invite()
        refusal = await phone.final()
        assert (refusal.status, refusal.headers.get("Retry-After")) == (503, "5")
        phone.ack()
    assert metric("activecall_sip_capacity_rejections_total", labels) - before == 2
    assert harness.responder.opened == 1


async def test_draining_refuses_new_calls_with_503(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    harness = await start_edge()
    await harness.edge.drain()
    phone = await RawPhone.open(harness.port())
    phone_factory.append(phone)
    phone.invite()
    assert (await phone.final()).status == 503


async def test_the_answer_carries_the_external_address_in_c_and_contact(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    harness = await start_edge(external_ip="198.51.100.7")
    phone = await RawPhone.open(harness.port())
    phone_factory.append(phone)
    phone.invite()
    ok = await phone.final()
    assert ok.headers.get("Contact") == f"<sip:active-call@198.51.100.7:{harness.port()}>"
    body = ok.body.decode()
    assert "c=IN IP4 198.51.100.7\r\n" in body
    assert "m=audio 40000 RTP/AVP 0 101\r\n" in body
    phone.ack()
    phone.send("BYE")
    assert (await phone.final()).status == 200


async def test_an_offer_without_a_common_codec_gets_488_with_a_warning(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    harness = await start_edge()
    phone = await RawPhone.open(harness.port())
    phone_factory.append(phone)
    phone.invite(AUDIO_OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 18"))
    refusal = await phone.final()
    assert refusal.status == 488
    assert refusal.headers.get("Warning") == '305 0.0.0.0 "no common codec"'
    assert harness.responder.opened == 0  # refused before a leg was opened


async def test_an_rtp_savp_offer_over_udp_is_answered_with_the_workers_key(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    harness = await start_edge()
    phone = await RawPhone.open(harness.port())
    phone_factory.append(phone)
    key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNk"  # 30 bytes: master key and salt
    offer = (
        AUDIO_OFFER.replace("RTP/AVP", "RTP/SAVP") + f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    )
    phone.invite(offer)
    ok = await phone.final()
    assert ok.status == 200
    (leg,) = harness.responder.legs.values()
    assert "m=audio 40000 RTP/SAVP 0 101\r\n" in ok.body.decode()
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{leg.crypto_key}\r\n" in ok.body.decode()
    phone.ack()
    (update,) = leg.updates
    assert (update.remote_crypto_suite, update.remote_crypto_key) == ("AES_CM_128_HMAC_SHA1_80", key)
    phone.send("BYE")
    assert (await phone.final()).status == 200


async def test_a_media_timeout_event_hangs_the_call_up(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    harness = await start_edge()
    phone, call_id = await call_up(harness, phone_factory)
    await harness.bus.emit(call_id, MediaTimeout(call_id=call_id, idle_s=30.0))
    bye = await phone.request("BYE")
    phone.reply(bye, 200)
    ended = await wait_event(harness, call_id, CallEnded)
    assert (ended.reason, ended.by) == ("media timeout", "media")
    assert harness.responder.closed == 1


async def test_dtmf_info_and_an_incoming_refer_become_events(
    start_edge: EdgeFactory, phone_factory: list[RawPhone]
) -> None:
    harness = await start_edge()
    phone, call_id = await call_up(harness, phone_factory)
    phone.send("INFO", "Content-Type: application/dtmf-relay\r\n", "Signal=#\r\nDuration=250\r\n")
    assert (await phone.final()).status == 200
    dtmf = await wait_event(harness, call_id, DtmfReceived)
    assert (dtmf.digit, dtmf.duration_ms) == ("#", 250)
    phone.send("REFER", "Refer-To: <sip:+15557770000@pstn.example.com>\r\n")
    assert (await phone.final()).status == 202
    notify = await phone.request("NOTIFY")
    assert (notify.headers.get("Event"), notify.body) == ("refer", b"SIP/2.0 100 Trying\r\n")
    phone.reply(notify, 200)
    transfer = await wait_event(harness, call_id, TransferRequested)
    assert (transfer.target, transfer.by) == ("sip:+15557770000@pstn.example.com", "remote")
    phone.send("BYE")
    assert (await phone.final()).status == 200
    await wait_event(harness, call_id, CallEnded)
    assert states(await harness.events(call_id)) == ["ringing", "answered", "ended"]
