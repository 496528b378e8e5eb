"""Turn-taking with every real part: a phone over TLS and SRTP, the media worker's pause, PocketSphinx,
the turn detector, the scripted agent and Piper.

The caller says "uh-huh" over the greeting, coughs over the first answer and interrupts the second with
a question; the agent goes on after the first two and stops for the third, keeping in its history only
what the caller heard of it. Every answer's stages are timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from e2e_calls import RATE, _with_bus, call_streams, find_call, report, wait_record

from activecall.audio import resample, write_wav
from activecall.bus import Bus
from activecall.llm.timings import STAGES
from activecall.messages import (
    BargeIn,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    SaySynthesized,
    TranscriptFinal,
    TurnTimings,
)
from activecall.testing.baresip import BaresipPhone
from activecall.testing.system import System
from activecall.tts.engines.piper import PiperEngine


def cough(seconds: float = 0.3, seed: int = 7) -> bytes:
    """A burst of loud, voiced-band noise with a fast attack, as a cough sounds on a phone line."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = rng.normal(0, 1, n)
    band = np.convolve(noise, np.hanning(9), mode="same")  # keep it in the voice band
    envelope = np.exp(-np.linspace(0, 4, n)) * np.minimum(1, np.linspace(0, 20, n))
    out = (band / np.abs(band).max() * envelope * 12000).astype("<i2")
    return out.tobytes()


def caller_audio(folder: Path, parts: list[str | float | bytes]) -> Path:
    tts = PiperEngine(noise_scale=0.0, noise_w_scale=0.0)
    pcm = bytearray()
    for part in parts:
        if isinstance(part, str):
            pcm += resample(b"".join(tts.synthesize(part)), tts.sample_rate, RATE)
        elif isinstance(part, bytes):
            pcm += part
        else:
            pcm += bytes(int(part * RATE) * 2)
    path = folder / "caller.wav"
    write_wav(path, bytes(pcm), RATE)
    return path


def history(redis_url: str, call_id: str) -> list[dict[str, Any]]:
    async def read(bus: Bus) -> list[dict[str, Any]]:
        return [json.loads(m) for m in await bus.redis.lrange(bus.keys.history(call_id), 0, -1)]

    found = _with_bus(redis_url, read)
    assert isinstance(found, list)
    return found


def test_backchannels_and_coughs_let_the_agent_go_on_real_words_stop_it(
    system: System, tmp_path: Path
) -> None:
    wav = caller_audio(
        tmp_path,
        [
            1.6, "Uh-huh.",  # over the greeting (about 4 s from the answer)
            4.5, "What are your opening hours?",
            1.5, cough(),  # over the answer, about a second into it
            4.0, "Can I speak to a person?",
            2.0, "Wait, I have another question about the price of the phone plan.",
            5.0, "Goodbye.",
            15.0,
        ],
    )  # fmt: skip
    phone = BaresipPhone(tmp_path / "phone", wav, "turns", certificate=system.certificate).start()
    try:
        assert phone.dial(f"sip:agent@127.0.0.1:{system.tls_port};transport=tls")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        phone.wait_event("CALL_CLOSED", 60)  # the agent hangs up after its goodbye
    finally:
        phone.stop()
    call_id = find_call(system.redis_url, "turns").call_id
    wait_record(system.redis_url, call_id, lambda r: r.state == "ended")
    streams = call_streams(system.redis_url, call_id)
    finals = [f.text for f in streams.of_type(TranscriptFinal)]
    report(f"turn-taking call: the asr's finals {finals}")
    events = [type(e).__name__ + ":" + str(getattr(e, "turn_id", "")) for e in streams.events]
    report("turn-taking call: " + " ".join(e for e in events if e.startswith(("Playback", "BargeIn"))))

    started = [p.turn_id for p in streams.of_type(PlaybackStarted)]
    assert started[0] == "greeting" and len(started) >= 4, started
    paused = {p.turn_id for p in streams.of_type(PlaybackPaused)}
    resumed = {p.turn_id for p in streams.of_type(PlaybackResumed)}
    cut = {b.turn_id: b for b in streams.of_type(BargeIn)}
    finished = {f.turn_id: f for f in streams.of_type(PlaybackFinished)}

    def length_ms(turn_id: str) -> int:
        return sum(s.duration_ms for s in streams.of_type(SaySynthesized) if s.turn_id == turn_id)

    # "Uh-huh" over the greeting: paused, resumed, and every word of it played.
    assert "greeting" in paused and "greeting" in resumed and "greeting" not in cut
    assert finished["greeting"].played_ms >= length_ms("greeting") - 40
    # The cough over the opening hours: the same.
    hours = started[1]
    assert hours in paused and hours in resumed and hours not in cut, (hours, paused, resumed)
    assert finished[hours].played_ms >= length_ms(hours) - 40
    # The question over the answer about a person: it stops, and the history keeps what was heard.
    person = started[2]
    assert person in cut, (person, cut)
    assert cut[person].played_ms < length_ms(person) - 500
    (kept,) = [
        m for m in history(system.redis_url, call_id) if m["turn_id"] == person and m["role"] == "assistant"
    ]
    report(f"turn-taking call: what the history keeps of the interrupted answer: {kept}")
    assert "cut" in kept and "opening hours" not in kept["content"][0]["text"], kept

    timings = streams.of_type(TurnTimings)
    assert timings and all(list(t.stages) == list(STAGES) for t in timings), timings
    for timing in timings:
        report(
            f"turn-taking call: {timing.turn_id} stages (ms after the caller's last speech) {timing.stages}"
        )
