"""A takeover leg picks a call up where the caller left the lost worker's leg: the turn that was
playing goes on from that point (playback.resumed), finished turns stay finished, and the caller's
audio:in keeps its media clock. Two workers in-process, a real Redis, an SRTP peer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
from test_leg import say, wait_events

from activecall.bus import Bus
from activecall.config import Config
from activecall.media.playout import Playout
from activecall.media.takeover import Pickup, restore, turns_so_far
from activecall.media.worker import MediaWorker
from activecall.messages import (
    AudioChunk,
    LegOpen,
    LegOpened,
    Message,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    SaySynthesized,
    TurnCancelled,
)
from activecall.testing.media import LegClient, ncc_peak, poll, voiced

OpenLeg = Callable[..., Awaitable[LegClient]]
StartWorker = Callable[..., Awaitable[MediaWorker]]
RATE = 8000


async def open_takeover(client: LegClient, worker_id: str, heard_until: float) -> LegOpened:
    """leg.open with takeover on ``worker_id`` for the client's call, the peer pointed at it."""
    client.worker_id = worker_id
    client.leg_id = f"{client.leg_id}.2"
    opened = await client.request(
        LegOpen(leg_id=client.leg_id, srtp=True, takeover=True, heard_until=heard_until)
    )
    assert isinstance(opened, LegOpened) and not opened.error, opened
    client.peer.connect((opened.address, opened.port), opened.crypto_key)
    return opened


async def test_the_turn_playing_on_a_lost_worker_goes_on_from_where_the_caller_left_it(
    bus: Bus, start_worker: StartWorker, media_config: Config, open_leg: OpenLeg
) -> None:
    first = await start_worker(media_config, "media-a")
    client = await open_leg(first, srtp=True)
    peer = client.peer
    agent = voiced(4.0, f0=170.0, seed=3.0)
    await bus.emit(client.call_id, SaySynthesized(turn_id="t1", seq=0, duration_ms=4000))
    await say(bus, client, "t1", agent)
    await bus.emit(client.call_id, TurnCancelled(turn_id="t0", reason="withdrawn"))
    await wait_events(client, PlaybackStarted)
    await peer.play(voiced(0.6, f0=120.0))  # the caller's audio, into audio:in through the first leg
    heard_until = time.time()
    await first.stop()  # the worker is gone; nothing of it says where the turn was
    old_ssrcs = {r.packet.ssrc for r in peer.received}
    in_before = await client.audio_in()
    frames_before = await bus.read({bus.keys.audio_in(client.call_id): "0"}, count=10_000)

    second = await start_worker(media_config, "media-b")
    await open_takeover(client, second.worker_id, heard_until)
    await asyncio.sleep(0.3)  # the turn must not go on before the leg is updated
    assert not [r for r in peer.received if r.packet.ssrc not in old_ssrcs]
    assert (await client.update()).ok
    late = AudioChunk(call_id=client.call_id, turn_id="t0", seq=0, pcm=b"\x10\x00" * 1600, last=True)
    await bus.publish(bus.keys.audio_out(client.call_id), late)  # a cancelled turn's chunk: dropped
    (finished,) = await wait_events(client, PlaybackFinished)
    await peer.play(voiced(0.4, f0=120.0))
    await poll(client.audio_in, lambda audio: len(audio) > len(in_before))

    events = await client.events()
    (resumed,) = [e for e in events if isinstance(e, PlaybackResumed)]
    assert resumed.turn_id == "t1" and 0 < resumed.played_ms < 4000
    assert [e.turn_id for e in events if isinstance(e, PlaybackStarted)] == ["t1"]  # not t0, not again
    assert (finished.turn_id, finished.played_ms) == ("t1", 4000)
    new_packets = [r for r in peer.received if r.packet.ssrc not in old_ssrcs]
    silence = peer.codec.encode(np.zeros(160, np.int16))
    first_audio = next(i for i, r in enumerate(new_packets) if r.packet.payload != silence)
    played = np.concatenate([peer.codec.decode(r.packet.payload) for r in new_packets[first_audio:]])
    rest = agent[resumed.played_ms * RATE // 1000 :]
    # The new leg's first agent audio is the turn from the resume point on, not from its start.
    score, lag = ncc_peak(rest, played[: len(rest) + 160], max_lag=160)
    assert score >= 0.9 and lag == 0, (score, lag)
    # The caller's media clock goes on: the new leg's frames come after the old leg's.
    frames = await bus.read({bus.keys.audio_in(client.call_id): "0"}, count=10_000)
    old_last, new_first = frames_before[-1].message, frames[len(frames_before)].message
    assert new_first.at_ms > old_last.at_ms and new_first.seq > old_last.seq  # type: ignore[attr-defined]


def test_the_events_say_how_far_each_turn_played() -> None:
    events: list[Message] = [
        SaySynthesized(turn_id="t1", seq=0, duration_ms=2000, ts=100.0),
        PlaybackStarted(turn_id="t1", ts=100.0),
        PlaybackFinished(turn_id="t1", played_ms=2000, ts=102.0),
        SaySynthesized(turn_id="t2", seq=0, duration_ms=5000, ts=102.0),
        PlaybackStarted(turn_id="t2", ts=102.5),
        PlaybackPaused(turn_id="t2", played_ms=700, ts=103.2),
        PlaybackResumed(turn_id="t2", played_ms=700, ts=104.0),
        SaySynthesized(turn_id="t3", seq=0, duration_ms=1000, ts=104.1),
        SaySynthesized(turn_id="t4", seq=0, duration_ms=1000, ts=104.1),
        PlaybackStarted(turn_id="t4", ts=104.2),
        PlaybackPaused(turn_id="t4", played_ms=300, ts=104.5),
    ]
    turns = turns_so_far(events)
    assert turns["t1"].closed and not turns["t2"].closed
    assert turns["t2"].played_at(105.5) == 2200  # 700 before the pause, then 1.5 s since the resume
    assert (turns["t3"].started, turns["t3"].played_at(105.5)) == (False, 0)
    assert turns["t4"].played_at(110.0) == 300  # paused: it stays where it paused


def test_a_restored_playout_resumes_the_playing_turn_and_queues_the_next() -> None:
    emitted: list[Message] = []
    playout = Playout(emitted.append)
    first = np.arange(RATE, dtype=np.int16)  # one second
    second = np.full(800, 5, np.int16)
    pickup = Pickup(
        chunks=[
            AudioChunk(turn_id="t2", seq=0, pcm=first[:4000].tobytes()),
            AudioChunk(turn_id="t2", seq=1, pcm=first[4000:].tobytes(), last=True),
            AudioChunk(turn_id="t3", seq=0, pcm=second.tobytes(), last=True),
        ],
        played_ms={"t2": 600},
        closed=["t1"],
    )
    restore(playout, pickup)
    assert not playout.add_chunk("t1", 5, b"\x00\x01" * 160, RATE, True)
    frames = []
    while (frame := playout.next_frame()) is not None:
        frames.append(np.frombuffer(frame, np.int16))
    played = np.concatenate(frames)
    assert np.array_equal(played[:3200], first[4800:])  # t2 from 600 ms on
    assert np.array_equal(played[3200:4000], second)
    assert [(type(e).__name__, e.turn_id) for e in emitted] == [  # type: ignore[attr-defined]
        ("PlaybackResumed", "t2"),
        ("PlaybackFinished", "t2"),
        ("PlaybackStarted", "t3"),
        ("PlaybackFinished", "t3"),
    ]
    resumed, finished = emitted[0], emitted[1]
    assert isinstance(resumed, PlaybackResumed) and resumed.played_ms == 600
    assert isinstance(finished, PlaybackFinished) and finished.played_ms == 1000
