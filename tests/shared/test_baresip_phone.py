"""The baresip test phone itself: two phones talk over TLS with mandatory SDES SRTP."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np

from activecall.testing.baresip import BaresipPhone, make_certificate


def write_tone(path: Path, hz: float, seconds: float, rate: int = 8000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (8000 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())


def dominant_hz(path: Path) -> float:
    with wave.open(str(path), "rb") as handle:
        rate = handle.getframerate()
        samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


def test_two_phones_talk_over_tls_and_srtp(tmp_path: Path) -> None:
    _, _, combined = make_certificate(tmp_path / "certs")
    write_tone(tmp_path / "low.wav", 440, 8)
    write_tone(tmp_path / "high.wav", 1000, 8)
    callee = BaresipPhone(tmp_path / "callee", tmp_path / "high.wav", "callee", auto_answer=True,
                          certificate=combined).start()  # fmt: skip
    caller = BaresipPhone(tmp_path / "caller", tmp_path / "low.wav", "caller", certificate=combined).start()
    try:
        assert caller.dial(f"sip:callee@127.0.0.1:{callee.tls_port};transport=tls")["ok"]
        caller.wait_event("CALL_ESTABLISHED")
        assert caller.wait_event("CALL_MENC")["param"] == "0,audio,AES_CM_128_HMAC_SHA1_80"
        time.sleep(2)
        caller.hangup()
        caller.wait_event("CALL_CLOSED")
    finally:
        caller.stop()
        callee.stop()
    caller_heard, _ = caller.dumps()
    callee_heard, _ = callee.dumps()
    assert caller_heard is not None and callee_heard is not None
    assert abs(dominant_hz(caller_heard) - 1000) < 20
    assert abs(dominant_hz(callee_heard) - 440) < 20
