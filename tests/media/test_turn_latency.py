"""Turn latency: from the end of the caller's speech to the first packet of the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
from prometheus_client import REGISTRY

from activecall.bus import Bus
from activecall.media.worker import MediaWorker
from activecall.messages import AudioChunk, PlaybackStarted, SpeechStopped
from activecall.testing.media import LegClient, poll, voiced

OpenLeg = Callable[..., Awaitable[LegClient]]


def observations() -> float:
    return REGISTRY.get_sample_value("activecall_turn_latency_seconds_count") or 0.0


async def test_the_answer_s_first_packet_carries_the_time_since_speech_ended(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    peer = client.peer
    speech = np.concatenate((voiced(1.0), np.zeros(8000 * 2, np.int16)))
    frames = iter(range(len(speech) // 160))

    def caller(_: object) -> None:
        i = next(frames, None)
        peer.send_frame(speech[i * 160 : (i + 1) * 160] if i is not None else np.zeros(160, np.int16))

    peer.on_packet = caller
    before = observations()
    await poll(client.events, lambda events: any(isinstance(e, SpeechStopped) for e in events))
    stopped_seen = time.monotonic()
    await asyncio.sleep(0.3)  # the agent "thinks"
    pcm = (np.sin(np.arange(4000) / 3) * 3000).astype("<i2").tobytes()
    await bus.publish(
        bus.keys.audio_out(client.call_id),
        AudioChunk(call_id=client.call_id, turn_id="a1", seq=0, pcm=pcm, last=True),
    )
    events = await poll(client.events, lambda events: any(isinstance(e, PlaybackStarted) for e in events))
    started = next(e for e in events if isinstance(e, PlaybackStarted))
    waited_ms = (time.monotonic() - stopped_seen) * 1000
    peer.on_packet = None
    # At least the pause after the event, plus the silence the detector needed to confirm the end.
    assert 300 <= started.latency_ms <= waited_ms + 1000, (started.latency_ms, waited_ms)
    assert observations() == before + 1
