import numpy as np
import numpy.typing as npt
import pytest

from activecall.media.vad import (
    Frame,
    SpeechDetector,
    SpeechEvent,
    SpeechStarted,
    SpeechState,
    SpeechStopped,
    VadError,
    WebRtcVad,
)

Samples = npt.NDArray[np.int16]


def voiced(seconds: float, rate: int, f0: float = 130.0, syllable_ms: int = 190, gap_ms: int = 60) -> Samples:
    """A voiced-like signal: a glottal-ish harmonic series with slow pitch drift, cut into syllables."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = sum(np.sin(k * phase) / k for k in range(1, 40) if k * f0 * 1.1 < rate / 2)
    position = (t % ((syllable_ms + gap_ms) / 1000)) / (syllable_ms / 1000)
    envelope = np.where(position < 1, np.sin(np.pi * np.minimum(position, 1)), 0.0)
    shaped = signal * envelope
    result: Samples = (shaped / np.abs(shaped).max() * 8000).astype(np.int16)
    return result


def silence(seconds: float, rate: int) -> Samples:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def frames(audio: Samples, rate: int, ms: int = 20) -> list[Samples]:
    size = rate * ms // 1000
    return [audio[i : i + size] for i in range(0, len(audio) - size + 1, size)]


def detect(detector: SpeechDetector, audio: Samples) -> list[SpeechEvent]:
    events = []
    for frame in frames(audio, detector.sample_rate, detector.frame_ms):
        event = detector.process(frame)
        if event is not None:
            events.append(event)
    return events


class ScriptedVad:
    """Answers from a script of per-frame decisions."""

    def __init__(self, script: str) -> None:
        self.decisions = iter(script)

    def is_speech(self, frame: Frame, sample_rate: int) -> bool:
        return next(self.decisions) == "1"


def scripted(script: str, **kwargs: int) -> list[SpeechEvent]:
    detector = SpeechDetector(ScriptedVad(script), 8000, **kwargs)
    events = [detector.process(b"") for _ in script]
    return [event for event in events if event is not None]


def test_silence_is_never_speech() -> None:
    vad = WebRtcVad(2)
    for rate in (8000, 16000):
        assert not any(vad.is_speech(frame, rate) for frame in frames(silence(2, rate), rate))
    assert detect(SpeechDetector(WebRtcVad(2)), silence(2, 8000)) == []


def test_low_level_white_noise_does_not_start_speech() -> None:
    noise = np.random.default_rng(1).normal(0, 100, 16000).astype(np.int16)  # about -50 dBFS
    vad = WebRtcVad(2)
    decisions = [vad.is_speech(frame, 8000) for frame in frames(noise, 8000)]
    # The detector's noise model starts empty: only the first few frames pass for speech.
    assert decisions[:4] == [True] * 4
    assert not any(decisions[4:])
    assert detect(SpeechDetector(WebRtcVad(2)), noise) == []


@pytest.mark.parametrize("rate", [8000, 16000])
def test_voiced_signal_starts_and_stops_speech(rate: int) -> None:
    audio = np.concatenate([silence(0.5, rate), voiced(1.2, rate), silence(1.0, rate)])
    events = detect(SpeechDetector(WebRtcVad(2), rate, start_ms=200, stop_ms=500), audio)
    # Onset at the first voiced frame; the end lags the signal (1700 ms) by webrtcvad's own hangover.
    assert events == [
        SpeechStarted(time_ms=500, detected_ms=700),
        SpeechStopped(time_ms=1800, detected_ms=2300),
    ]


def test_two_utterances_and_a_short_pause() -> None:
    rate = 8000
    audio = np.concatenate(
        [
            silence(0.3, rate),
            voiced(0.6, rate),
            silence(0.3, rate),  # shorter than stop_ms: the same utterance
            voiced(0.6, rate),
            silence(1.0, rate),  # a real stop
            voiced(0.6, rate),
            silence(1.0, rate),
        ]
    )
    events = detect(SpeechDetector(WebRtcVad(2), rate), audio)
    assert [type(event) for event in events] == [SpeechStarted, SpeechStopped, SpeechStarted, SpeechStopped]
    assert events[0].time_ms == 300
    assert events[2].time_ms == 2800


def test_detector_timing_is_exact_on_scripted_decisions() -> None:
    # 20 ms frames: 3 silent, 10 speech (200 ms -> start), 25 silent (500 ms -> stop)
    events = scripted("000" + "1" * 10 + "0" * 25)
    assert events == [SpeechStarted(time_ms=60, detected_ms=260), SpeechStopped(time_ms=260, detected_ms=760)]


def test_interrupted_runs_restart_counting() -> None:
    # 9 speech frames then a gap never reach 200 ms; in speech, 24 silent frames then one speech
    # frame never stop.
    assert scripted("1" * 9 + "0" + "1" * 9 + "0") == []
    events = scripted("1" * 10 + "0" * 24 + "1" + "0" * 25)
    assert events == [SpeechStarted(time_ms=0, detected_ms=200), SpeechStopped(time_ms=700, detected_ms=1200)]


def test_custom_thresholds_and_reset() -> None:
    detector = SpeechDetector(ScriptedVad("11" + "000" + "11"), 8000, frame_ms=10, start_ms=20, stop_ms=30)
    events = [detector.process(b"") for _ in range(5)]
    assert events == [None, SpeechStarted(0, 20), None, None, SpeechStopped(20, 50)]
    assert detector.state is SpeechState.SILENCE
    detector.reset()
    assert detector.position_ms == 0
    assert [detector.process(b""), detector.process(b"")] == [None, SpeechStarted(0, 20)]


def test_webrtcvad_accepts_bytes_and_arrays_of_10_20_30_ms() -> None:
    vad = WebRtcVad(0)
    speech = voiced(0.5, 16000)
    for ms in (10, 20, 30):
        frame = speech[1600 : 1600 + 16 * ms]
        assert vad.is_speech(frame, 16000) is True
        assert vad.is_speech(frame.tobytes(), 16000) is True
        # A fresh detector: this one's hangover would still call the silence speech.
        assert WebRtcVad(0).is_speech(np.zeros(16 * ms, dtype=np.int16), 16000) is False


def test_webrtcvad_rejects_bad_frames() -> None:
    vad = WebRtcVad()
    with pytest.raises(VadError, match="does not take 22050 Hz"):
        vad.is_speech(bytes(882), 22050)
    with pytest.raises(VadError, match="a frame of 300 bytes at 8000 Hz is not 10, 20 or 30 ms"):
        vad.is_speech(bytes(300), 8000)
    with pytest.raises(VadError, match="frame must be int16, not float32"):
        vad.is_speech(np.zeros(160, dtype=np.float32), 8000)
    with pytest.raises(VadError, match="aggressiveness must be 0..3, not 4"):
        WebRtcVad(4)
