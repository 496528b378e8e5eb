"""Speech made once per test session: Piper sentences passed through G.711 at 8 kHz."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from activecall.audio import resample
from activecall.media.g711 import pcmu_decode, pcmu_encode
from activecall.tts.engines import TtsEngine
from activecall.tts.engines.piper import PiperEngine


@pytest.fixture(scope="session")
def piper() -> TtsEngine:
    """Piper without its random variation of timing and intonation: a sentence is the same audio whichever
    tests ran before (with the noise, it would depend on the order of the sentences spoken)."""
    engine = PiperEngine(noise_scale=0.0, noise_w_scale=0.0)
    engine.warm_up()
    return engine


@pytest.fixture(scope="session")
def phone_speech(piper: TtsEngine) -> Callable[[str], bytes]:
    """The sentence as a caller's phone delivers it: 8 kHz PCM16 after a PCMU round trip."""
    cache: dict[str, bytes] = {}

    def speak(text: str) -> bytes:
        if text not in cache:
            speech = resample(b"".join(piper.synthesize(text)), piper.sample_rate, 8000)
            cache[text] = pcmu_decode(pcmu_encode(speech)).tobytes()
        return cache[text]

    return speak
