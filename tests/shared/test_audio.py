from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from activecall.audio import (
    AudioFormatError,
    corpus_word_accuracy,
    float_to_pcm16,
    int16_to_pcm16,
    ncc_peak,
    normalize_words,
    pcm16_to_float32,
    read_wav,
    resample,
    trim_leading_silence,
    word_accuracy,
    word_errors,
    write_wav,
)


def test_ncc_finds_a_delayed_scaled_copy() -> None:
    rng = np.random.default_rng(1)
    signal = rng.normal(size=4000)
    haystack = np.concatenate((rng.normal(size=700) * 0.01, 0.3 * signal, rng.normal(size=300) * 0.01))
    peak, lag = ncc_peak(haystack, signal)
    assert peak == pytest.approx(1.0, abs=1e-3)
    assert lag == 700


def test_ncc_of_unrelated_noise_is_low() -> None:
    rng = np.random.default_rng(2)
    peak, _ = ncc_peak(rng.normal(size=8000), rng.normal(size=2000))
    assert peak < 0.15


@pytest.mark.parametrize(
    ("reference", "hypothesis", "accuracy"),
    [
        ("book an appointment", "book an appointment", 1.0),
        ("Book an appointment!", "book an appointment", 1.0),
        ("book an appointment for tomorrow", "book appointment for tomorrow", 0.8),
        ("book an appointment", "look an appointment please", 1 - 2 / 3),
        ("yes", "", 0.0),
        ("a b", "c d e f g", 0.0),
    ],
)
def test_word_accuracy(reference: str, hypothesis: str, accuracy: float) -> None:
    assert word_accuracy(reference, hypothesis) == pytest.approx(accuracy)


def test_wav_round_trip_and_resampling(tmp_path: Path) -> None:
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 32767).astype("<i2").tobytes()
    write_wav(tmp_path / "t.wav", tone, 16000)
    pcm, rate = read_wav(tmp_path / "t.wav")
    assert (pcm, rate) == (tone, 16000)
    down = resample(pcm, 16000, 8000)
    assert len(down) == len(pcm) // 2
    spectrum = np.abs(np.fft.rfft(np.frombuffer(down, dtype="<i2")))
    assert np.fft.rfftfreq(8000, 1 / 8000)[int(np.argmax(spectrum))] == pytest.approx(440, abs=2)


# --- Alignment: a signal against itself delayed -------------------------------------------------


@pytest.mark.parametrize("delay", [0, 1, 37, 1234])
def test_ncc_of_a_signal_with_itself_delayed_is_one_at_the_delay(delay: int) -> None:
    signal = np.random.default_rng(delay).normal(size=3000)
    delayed = np.concatenate((np.zeros(delay), signal))
    assert ncc_peak(delayed, signal) == pytest.approx((1.0, delay))
    value, lag = ncc_peak(signal, delayed)
    assert value == pytest.approx(1.0)
    assert lag == -delay


def test_ncc_reads_pcm16_and_bounds_the_lag() -> None:
    tone = (10000 * np.sin(np.arange(800) * 0.3) * np.hanning(800)).astype("<i2")
    delayed = np.concatenate((np.zeros(160, dtype="<i2"), tone))
    value, lag = ncc_peak(delayed.tobytes(), tone.tobytes())
    assert (round(value, 6), lag) == (1.0, 160)
    value, lag = ncc_peak(delayed, tone, max_lag=100)
    assert abs(lag) <= 100 and value < 0.99
    assert ncc_peak(np.zeros(100), tone) == (0.0, 0)
    assert ncc_peak(tone, np.zeros(10)) == (0.0, 0)


# --- PCM16 <-> numpy ------------------------------------------------------------------------------


def test_pcm16_golden_samples() -> None:
    pcm = bytes.fromhex("0000 0100 ffff ff7f 0080")
    assert int16_to_pcm16(np.array([0, 1, -1, 32767, -32768], dtype=np.int16)) == pcm
    assert pcm16_to_float32(pcm).tolist() == [0.0, 1 / 32768, -1 / 32768, 32767 / 32768, -1.0]
    assert float_to_pcm16(np.array([0.0, 1 / 32768, -1.0, 1.5, -1.5, 0.49 / 32768])) == bytes.fromhex(
        "0000 0100 0080 ff7f 0080 0000"
    )


def test_odd_pcm16_is_refused() -> None:
    with pytest.raises(AudioFormatError, match=r"PCM16 data has an odd length \(3 bytes\)"):
        pcm16_to_float32(b"abc")
    with pytest.raises(ValueError, match="odd length"):
        resample(b"abc", 8000, 16000)


def test_resampling_keeps_silence_and_refuses_bad_rates() -> None:
    assert resample(bytes(320), 8000, 8000) == bytes(320)
    assert resample(bytes(320), 8000, 16000) == bytes(640)
    with pytest.raises(AudioFormatError, match="sample rate must be positive, got 0"):
        resample(bytes(320), 0, 8000)


def test_stereo_wav_is_mixed_down_and_other_widths_refused(tmp_path: Path) -> None:
    stereo = np.array([[1000, 3000], [-100, -300]], dtype="<i2").tobytes()
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(stereo)
    assert read_wav(tmp_path / "stereo.wav") == (np.array([2000, -200], dtype="<i2").tobytes(), 8000)
    with wave.open(str(tmp_path / "u8.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(bytes(8))
    with pytest.raises(AudioFormatError, match="u8.wav: sample width 8 bits, expected 16"):
        read_wav(tmp_path / "u8.wav")


# --- Word accuracy: golden cases ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "hypothesis", "accuracy"),
    [
        ("I'd like a LARGE pizza.", "i'd like a large pizza", 1.0),
        ("That\u2019s all, thanks!", "that's all thanks", 1.0),
        ("We're going to the store.", "we are going to the store", 1.0),
        ("I don't know", "i do not know", 1.0),
        ("I can't come", "i can not come", 1.0),
        ("The weather is nice", "the weather's nice", 0.5),  # 's stays ambiguous
        ("pick-up at seven o'clock", "pick up at seven o'clock", 1.0),
        ("one two three four", "one three four five", 0.5),  # a deletion and an insertion
        ("one two three four", "one too three for", 0.5),  # two substitutions
        ("", "", 1.0),
        ("", "uh", 0.0),
    ],
)
def test_word_accuracy_golden(reference: str, hypothesis: str, accuracy: float) -> None:
    assert word_accuracy(reference, hypothesis) == pytest.approx(accuracy)


def test_corpus_accuracy_weighs_sentences_by_their_words() -> None:
    pairs = [
        ("one two three four five six seven eight", "one two three four five six seven eight"),
        ("yes", "no"),
    ]
    assert word_errors("yes", "no") == (1, 1)
    assert corpus_word_accuracy(pairs) == pytest.approx(8 / 9)
    assert normalize_words("Won't you? 'Quoted' words") == ["will", "not", "you", "quoted", "words"]


def test_trim_leading_silence_keeps_ten_ms_before_the_first_sound() -> None:
    lead = np.zeros(480, np.int16)  # 60 ms of silence at 8 kHz
    lead[100] = 50  # line noise below the threshold
    tone = (np.sin(np.arange(800) / 3) * 5000).astype(np.int16)
    pcm = int16_to_pcm16(np.concatenate([lead, tone]))
    trimmed = trim_leading_silence(pcm, 8000)
    first_loud = 480 + int(np.flatnonzero(np.abs(tone) > 300)[0])
    assert len(trimmed) == len(pcm) - 2 * (first_loud - 80)
    assert trimmed.endswith(int16_to_pcm16(tone))
    assert trim_leading_silence(int16_to_pcm16(lead), 8000) == int16_to_pcm16(lead)  # all quiet: kept
