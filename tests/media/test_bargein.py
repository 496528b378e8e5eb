"""Barge-in: the detector alone, then caller speech pausing a playing turn end to end, and the
conversation's answer to the pause: stop (real words), resume (a backchannel), or no answer at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from activecall.bus import Bus
from activecall.media.bargein import BargeInDetector, CallerActivity
from activecall.media.metrics import STATS
from activecall.media.worker import MediaWorker
from activecall.messages import (
    AudioChunk,
    BargeIn,
    BargeInPolicy,
    DtmfReceived,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    ResumePlayback,
    SpeechStarted,
    SpeechStopped,
    StopPlayback,
    TurnCancelled,
)
from activecall.testing.media import LegClient, Received, RtpPeer, poll, voiced

OpenLeg = Callable[..., Awaitable[LegClient]]
SILENCE = bytes([0xFF]) * 160


def feed(detector: BargeInDetector, decisions: str, playing_ms: int | None) -> list[int]:
    """Indexes of the frames (``s`` speech, ``.`` not) on which the detector fires."""
    return [i for i, c in enumerate(decisions) if detector.feed(c == "s", playing_ms)]


def test_fires_after_min_speech_once_the_guard_passed() -> None:
    detector = BargeInDetector(guard_ms=300, min_speech_ms=100)
    assert feed(detector, "sssss", playing_ms=None) == []  # nothing plays
    assert feed(detector, "sssss", playing_ms=200) == []  # inside the guard
    assert feed(detector, "....sssss", playing_ms=400) == [8]


def test_one_non_speech_frame_is_tolerated_two_reset() -> None:
    detector = BargeInDetector(guard_ms=0, min_speech_ms=100)
    assert feed(detector, "ss.sss", playing_ms=0) == [5]
    assert feed(detector, "ss..sss", playing_ms=0) == []
    assert feed(detector, "ss", playing_ms=0) == [1]  # the run of three above went on


def test_speech_inside_the_guard_does_not_count() -> None:
    detector = BargeInDetector(guard_ms=300, min_speech_ms=60)
    assert [detector.feed(True, ms) for ms in (240, 260, 280, 300, 320, 340)] == [False] * 5 + [True]


def tone(seconds: float, rate: int = 8000) -> np.ndarray:
    """Agent audio with no gaps, so that every frame of the turn is told apart from silence."""
    t = np.arange(int(seconds * rate)) / rate
    out: np.ndarray = (4000 * np.sin(2 * np.pi * 440 * t) + 2000 * np.sin(2 * np.pi * 660 * t)).astype(
        np.int16
    )
    return out


def test_caller_activity_starts_fast_and_lets_go_after_a_short_silence() -> None:
    activity = CallerActivity(start_frames=2, stop_frames=8)
    assert [activity.feed(c == "s") for c in "s.s."] == [False] * 4  # no two in a row
    assert [activity.feed(c == "s") for c in "ss"] == [False, True]
    assert all(activity.feed(c == "s") for c in ".......s.......")  # gaps under 8 frames
    assert activity.feed(False) is False  # the eighth silent frame in a row


async def test_caller_speech_pauses_a_five_second_turn_and_a_barge_in_stop_cuts_it(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    peer = client.peer
    speech = voiced(1.0)
    onset: list[int] = []  # RTP timestamp of the agent packet that the first speech frame answered
    sent = 0

    def answer(item: Received) -> None:
        """Lock-step caller: one frame back per agent packet, speech from 1 s into the turn."""
        nonlocal sent
        turn_frames = sum(r.packet.payload != SILENCE for r in peer.received)
        if turn_frames >= 50 and sent < len(speech) // 160:
            if not onset:
                onset.append(item.packet.timestamp)
            peer.send_frame(speech[sent * 160 : (sent + 1) * 160])
            sent += 1
        else:
            peer.send_frame(np.zeros(160, np.int16))

    peer.on_packet = answer
    audio = tone(5.0)
    stream = bus.keys.audio_out(client.call_id)
    for seq in range(25):  # 5 s in 200 ms chunks
        pcm = audio[seq * 1600 : (seq + 1) * 1600].astype("<i2").tobytes()
        chunk = AudioChunk(call_id=client.call_id, turn_id="t1", seq=seq, pcm=pcm, last=seq == 24)
        await bus.publish(stream, chunk)
    barge_ins, pauses = STATS.barge_ins, STATS.pauses
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackPaused) for e in events))
    (paused,) = [e for e in events if isinstance(e, PlaybackPaused)]
    await peer.wait_for(lambda: sent >= 20)  # the caller's words go on: the conversation stops the turn
    await client.command(StopPlayback(call_id=client.call_id, turn_id="t1", reason="barge_in"))
    await poll(client.events, lambda events: any(isinstance(e, BargeIn) for e in events))
    peer.on_packet = None
    events = [e for e in await client.events() if not isinstance(e, SpeechStarted | SpeechStopped)]
    kinds = [PlaybackStarted, PlaybackPaused, BargeIn, TurnCancelled, PlaybackFinished]
    assert [type(e) for e in events] == kinds
    barge_in, cancelled, finished = events[2], events[3], events[4]
    assert isinstance(barge_in, BargeIn) and isinstance(cancelled, TurnCancelled)
    assert isinstance(finished, PlaybackFinished)
    assert (cancelled.turn_id, cancelled.reason) == ("t1", "barge_in")
    assert finished.played_ms == barge_in.played_ms == paused.played_ms
    assert (STATS.barge_ins - barge_ins, STATS.pauses - pauses) == (1, 1)

    packets = [r.packet for r in peer.received]
    turn = [p for p in packets if p.payload != SILENCE]
    stop = next(p for p in packets if p.timestamp > turn[0].timestamp and p.payload == SILENCE)
    assert stop.timestamp == turn[-1].timestamp + 160  # silent at once, not faded, and never resumed
    reaction_ms = ((stop.timestamp - onset[0]) & 0xFFFFFFFF) / 8
    assert 0 < reaction_ms <= 150, reaction_ms
    heard_ms = len(turn) * 20
    assert abs(barge_in.played_ms - heard_ms) <= 40, (barge_in.played_ms, heard_ms)

    late = AudioChunk(call_id=client.call_id, turn_id="t1", seq=25, pcm=audio[:1600].astype("<i2").tobytes())
    await bus.publish(stream, late)  # the rest of a cut turn never plays
    count = len(peer.received)
    await peer.wait_for(lambda: len(peer.received) >= count + 15)
    assert all(r.packet.payload == SILENCE for r in peer.received[count:])


async def test_a_resumed_turn_plays_on_from_where_it_paused(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    peer = client.peer
    await peer.play(np.zeros(800, np.int16))
    await play_turn(bus, client, 2.0)
    await poll(client.events, lambda events: any(isinstance(e, PlaybackStarted) for e in events))
    await asyncio.sleep(0.4)
    await peer.play(voiced(0.3))  # "uh-huh"
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackPaused) for e in events))
    (paused,) = [e for e in events if isinstance(e, PlaybackPaused)]
    await peer.play(np.zeros(4000, np.int16))  # half a second of the caller's silence: the agent waits
    assert not any(isinstance(e, PlaybackFinished) for e in await client.events())
    await client.command(ResumePlayback(call_id=client.call_id, turn_id="t1"))
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackFinished) for e in events))
    (resumed,) = [e for e in events if isinstance(e, PlaybackResumed)]
    (finished,) = [e for e in events if isinstance(e, PlaybackFinished)]
    assert resumed.played_ms == paused.played_ms
    assert finished.played_ms == 2000  # every frame of the turn played, none lost to the pause
    assert not any(isinstance(e, BargeIn | TurnCancelled) for e in events)
    heard = [r.packet for r in peer.received if r.packet.payload != SILENCE]
    assert len(heard) == 100
    gaps = [
        b.timestamp - a.timestamp
        for a, b in zip(heard, heard[1:], strict=False)
        if b.timestamp - a.timestamp != 160
    ]
    assert len(gaps) == 1 and gaps[0] >= 160 * 25, gaps  # one pause, then on from where it stopped


async def playing_with_a_short_pause_limit(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg, seconds: float
) -> LegClient:
    """A turn of ``seconds`` playing for 300 ms on a worker that waits 600 ms for a pause's decision."""
    worker.settings.barge_in_pause_max_ms = 600
    client = await open_leg(worker, srtp=True)
    await client.peer.play(np.zeros(800, np.int16))
    await play_turn(bus, client, seconds)
    await poll(client.events, lambda events: any(isinstance(e, PlaybackStarted) for e in events))
    await asyncio.sleep(0.3)
    return client


async def test_a_pause_nobody_answers_is_cut_while_the_caller_talks_on(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await playing_with_a_short_pause_limit(bus, worker, open_leg, 3.0)
    await client.peer.play(voiced(1.2))
    events = await poll(client.events, lambda events: any(isinstance(e, BargeIn) for e in events))
    kinds = [type(e) for e in events if not isinstance(e, SpeechStarted | SpeechStopped)]
    assert kinds == [PlaybackStarted, PlaybackPaused, BargeIn, TurnCancelled, PlaybackFinished], kinds


async def test_a_pause_nobody_answers_is_resumed_once_the_caller_is_silent(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await playing_with_a_short_pause_limit(bus, worker, open_leg, 2.0)
    await client.peer.play(np.concatenate((voiced(0.25), np.zeros(8000, np.int16))))
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackFinished) for e in events))
    kinds = [type(e) for e in events if not isinstance(e, SpeechStarted | SpeechStopped)]
    assert kinds == [PlaybackStarted, PlaybackPaused, PlaybackResumed, PlaybackFinished], kinds
    (finished,) = [e for e in events if isinstance(e, PlaybackFinished)]
    assert finished.played_ms == 2000


async def test_no_turn_starts_while_the_caller_speaks(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    peer = client.peer
    await peer.play(np.zeros(800, np.int16))
    caller = asyncio.create_task(peer.play(np.concatenate((voiced(1.2), np.zeros(8000, np.int16)))))
    speech_ends = time.monotonic() + 1.2
    await asyncio.sleep(0.3)  # the caller is well into a word when the answer arrives
    await play_turn(bus, client, 0.6)
    await caller
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackFinished) for e in events))
    heard = [r for r in peer.received if r.packet.payload != SILENCE]
    assert heard and heard[0].arrival > speech_ends, heard[0].arrival - speech_ends
    assert not any(isinstance(e, PlaybackPaused | BargeIn) for e in events)
    (finished,) = [e for e in events if isinstance(e, PlaybackFinished)]
    assert finished.played_ms == 600


async def test_a_turn_that_is_not_interruptible_plays_over_the_caller(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    await client.peer.play(np.zeros(800, np.int16))
    audio = tone(1.6)
    for seq, start in enumerate(range(0, len(audio), 1600)):
        pcm = audio[start : start + 1600].astype("<i2").tobytes()
        chunk = AudioChunk(
            call_id=client.call_id,
            turn_id="t1",
            seq=seq,
            pcm=pcm,
            last=start + 1600 >= len(audio),
            interruptible=False,
        )
        await bus.publish(bus.keys.audio_out(client.call_id), chunk)
    await poll(client.events, lambda events: any(isinstance(e, PlaybackStarted) for e in events))
    await client.peer.play(voiced(1.0))
    await press(client.peer, "3")
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackFinished) for e in events))
    (finished,) = [e for e in events if isinstance(e, PlaybackFinished)]
    assert finished.played_ms == 1600
    assert not any(isinstance(e, PlaybackPaused | BargeIn | TurnCancelled) for e in events)
    assert any(isinstance(e, DtmfReceived) for e in events)


async def play_turn(bus: Bus, client: LegClient, seconds: float, turn_id: str = "t1") -> None:
    audio = tone(seconds)
    chunks = range(0, len(audio), 1600)
    for seq, start in enumerate(chunks):
        pcm = audio[start : start + 1600].astype("<i2").tobytes()
        last = seq == len(chunks) - 1
        await bus.publish(
            bus.keys.audio_out(client.call_id),
            AudioChunk(call_id=client.call_id, turn_id=turn_id, seq=seq, pcm=pcm, last=last),
        )


async def press(peer: RtpPeer, digit: str) -> None:
    for data in peer.dtmf_packets(digit, duration_ms=100):
        peer.send_raw(data)
        await asyncio.sleep(0.02)


async def test_a_key_press_cuts_the_playing_turn_at_once(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    await client.peer.play(np.zeros(800, np.int16))
    await play_turn(bus, client, 3.0)
    await poll(client.events, lambda events: any(isinstance(e, PlaybackStarted) for e in events))
    await asyncio.sleep(0.1)  # no guard time for a key press: 100 ms in, it still cuts
    barge_ins = STATS.barge_ins
    await press(client.peer, "1")
    events = await poll(client.events, lambda events: any(isinstance(e, BargeIn) for e in events))
    (barge_in,) = [e for e in events if isinstance(e, BargeIn)]
    assert barge_in.turn_id == "t1" and 0 < barge_in.played_ms < 1000, barge_in
    assert STATS.barge_ins - barge_ins == 1
    events = await poll(client.events, lambda events: any(isinstance(e, DtmfReceived) for e in events))
    assert [e.digit for e in events if isinstance(e, DtmfReceived)] == ["1"]


async def test_a_playbook_policy_without_interruption_lets_the_turn_play_on(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    await client.command(BargeInPolicy(call_id=client.call_id, enabled=False))
    await client.peer.play(np.zeros(800, np.int16))
    await play_turn(bus, client, 1.6)
    await poll(client.events, lambda events: any(isinstance(e, PlaybackStarted) for e in events))
    await press(client.peer, "5")
    await client.peer.play(voiced(1.0))  # speech over the turn: the detector would fire without the policy
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackFinished) for e in events))
    (finished,) = [e for e in events if isinstance(e, PlaybackFinished)]
    assert finished.played_ms == 1600 and not any(isinstance(e, BargeIn | TurnCancelled) for e in events)
    assert any(isinstance(e, DtmfReceived) for e in events)  # the key still reaches the call's events


async def test_a_policy_guard_time_replaces_the_worker_default(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    await client.command(BargeInPolicy(call_id=client.call_id, guard_ms=5000, min_speech_ms=-1))
    await client.peer.play(np.zeros(800, np.int16))
    await play_turn(bus, client, 1.6)
    await poll(client.events, lambda events: any(isinstance(e, PlaybackStarted) for e in events))
    await client.peer.play(voiced(1.0))  # all of it inside the 5 s guard
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackFinished) for e in events))
    assert not any(isinstance(e, BargeIn) for e in events)
