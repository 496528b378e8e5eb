"""Speech made once per test session: Piper sentences passed through G.711 at 8 kHz."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from activecall.audio import resample
from activecall.media.g711 import pcmu_decode, pcmu_encode
from activecall.tts.engines import TtsEngine, create_tts_engine


@pytest.fixture(scope="session")
def piper() -> TtsEngine:
    engine = create_tts_engine("piper")
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
