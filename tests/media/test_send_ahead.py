"""Packets prepared a tick ahead: built and protected at the end of one tick, sent at the next.

The pacer is stopped once the leg is up and the worker's tick is driven by hand, so each test knows
which tick prepared a packet and which sent it; the sockets, SRTP and Redis are real.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from activecall.bus import Bus
from activecall.media.g711 import PCMA, PCMU
from activecall.media.leg import Leg
from activecall.media.rtp import RtpPacket
from activecall.media.worker import MediaWorker
from activecall.messages import AudioChunk, PlaybackStarted
from activecall.testing.media import LegClient, poll, voiced

OpenLeg = Callable[..., Awaitable[LegClient]]
SILENCE = PCMU.silence(160)
AGENT = voiced(0.2, f0=180.0)  # the turn the tests queue


async def hand_driven(worker: MediaWorker, open_leg: OpenLeg, srtp: bool = True) -> tuple[LegClient, Leg]:
    client = await open_leg(worker, srtp=srtp)
    await worker.pacer.stop()
    leg = worker.legs[client.leg_id]
    worker._on_tick(time.monotonic(), 0)  # prepares a packet, if no tick has since the leg.update
    await tick(worker, client)  # from here on each tick sends one packet
    return client, leg


async def tick(worker: MediaWorker, client: LegClient, skipped: int = 0) -> RtpPacket:
    """One tick of the worker; the packet it sent, as the peer received it."""
    before = len(client.peer.received)
    worker._on_tick(time.monotonic(), skipped)
    await client.peer.wait_for(lambda: len(client.peer.received) > before)
    assert len(client.peer.received) == before + 1
    return client.peer.received[-1].packet


async def queue_turn(bus: Bus, client: LegClient, leg: Leg) -> None:
    chunk = AudioChunk(
        call_id=client.call_id, turn_id="t1", seq=0, pcm=AGENT.astype("<i2").tobytes(), last=True
    )
    await bus.publish(bus.keys.audio_out(client.call_id), chunk)

    async def queued() -> list[str]:
        return leg.playout.queued()

    await poll(queued, bool)  # the worker's reader has taken it


async def started_events(worker: MediaWorker, client: LegClient) -> int:
    """PlaybackStarted events on the bus once the worker's writer has written all it has."""
    while (task := worker.writer._task) is not None and not task.done():
        await task
    return sum(isinstance(event, PlaybackStarted) for event in await client.events())


async def test_a_turn_starts_after_the_packet_already_prepared_and_is_announced_as_it_leaves(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client, leg = await hand_driven(worker, open_leg)
    await queue_turn(bus, client, leg)
    prepared_before = await tick(worker, client)  # sends the silence prepared before the turn came
    assert prepared_before.payload == SILENCE
    assert await started_events(worker, client) == 0  # its first frame is prepared, not sent
    first = await tick(worker, client)
    assert first.payload == PCMU.encode(AGENT[:160]) and first.marker
    assert await started_events(worker, client) == 1
    assert (first.sequence_number - prepared_before.sequence_number) & 0xFFFF == 1
    assert (first.timestamp - prepared_before.timestamp) & 0xFFFFFFFF == 160
    second = await tick(worker, client)
    assert second.payload == PCMU.encode(AGENT[160:320]) and not second.marker


async def test_a_packet_prepared_before_a_stall_keeps_its_timestamp_and_the_clock_moves_on(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client, leg = await hand_driven(worker, open_leg)
    await queue_turn(bus, client, leg)
    await tick(worker, client)  # prepares the turn's first frame
    first = await tick(worker, client)
    late = await tick(worker, client, skipped=5)
    assert late.payload == PCMU.encode(AGENT[160:320])  # no agent audio lost to the stall
    assert (late.sequence_number - first.sequence_number) & 0xFFFF == 1
    assert (late.timestamp - first.timestamp) & 0xFFFFFFFF == 160
    after = await tick(worker, client)
    assert after.payload == PCMU.encode(AGENT[320:480])
    assert (after.sequence_number - late.sequence_number) & 0xFFFF == 1
    assert (after.timestamp - late.timestamp) & 0xFFFFFFFF == 6 * 160  # five ticks of silence skipped


async def test_a_codec_change_drops_the_packet_prepared_in_the_old_one(
    worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client, leg = await hand_driven(worker, open_leg, srtp=False)
    before = await tick(worker, client)
    assert before.payload_type == PCMU.payload_type
    assert (await client.update(codec="PCMA", payload_type=PCMA.payload_type)).ok
    worker._on_tick(time.monotonic(), 0)  # nothing prepared fits: nothing sent, the clock moves on
    after = await tick(worker, client)
    assert after.payload_type == PCMA.payload_type and after.payload == PCMA.silence(160)
    assert (after.sequence_number - before.sequence_number) & 0xFFFF == 2  # the dropped packet's number
    assert (after.timestamp - before.timestamp) & 0xFFFFFFFF == 2 * 160
    assert all(r.packet.payload_type == PCMU.payload_type for r in client.peer.received[:-1])


async def test_the_prepared_packet_goes_to_the_address_of_the_tick_that_sends_it(
    worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client, leg = await hand_driven(worker, open_leg)
    old_port = client.peer.port
    before = await tick(worker, client)
    new_port = await client.peer.move()
    assert (await client.update(remote_port=new_port)).ok  # a re-INVITE between the prepare and the send
    after = await tick(worker, client)
    assert client.peer.received[-1].local_port == new_port != old_port
    assert (after.sequence_number - before.sequence_number) & 0xFFFF == 1
    assert client.peer.rejected == 0
