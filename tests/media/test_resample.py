import numpy as np
import numpy.typing as npt
import pytest

from activecall.media.resample import ResampleError, Resampler, resample

Samples = npt.NDArray[np.int16]


def tone(frequency: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0) -> Samples:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def rms(samples: Samples) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def peak_frequency(samples: Samples, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def stream(resampler: Resampler, audio: Samples, chunk: int) -> list[Samples]:
    outputs = [resampler.process(audio[i : i + chunk]) for i in range(0, len(audio), chunk)]
    return [*outputs, resampler.flush()]


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (8000, 22050), (22050, 8000)]
)
def test_one_shot_keeps_length_frequency_and_level(in_rate: int, out_rate: int) -> None:
    audio = tone(1000, in_rate)
    result = resample(audio, in_rate, out_rate)
    assert result.dtype == np.int16
    assert len(result) == out_rate
    assert peak_frequency(result, out_rate) == 1000.0
    middle = result[out_rate // 10 : -out_rate // 10]
    assert abs(20 * np.log10(rms(middle) / rms(audio))) < 0.05


@pytest.mark.parametrize("low_latency", [True, False])
@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (22050, 8000), (24000, 8000)]
)
def test_streaming_total_length_is_exact(in_rate: int, out_rate: int, low_latency: bool) -> None:
    resampler = Resampler(in_rate, out_rate, low_latency=low_latency)
    audio = tone(440, in_rate, seconds=2.0)
    total = sum(len(chunk) for chunk in stream(resampler, audio, in_rate // 50))
    assert total == 2 * out_rate


def test_fixed_rate_stream_equals_one_shot() -> None:
    audio = tone(440, 8000, seconds=2.0)
    streamed = np.concatenate(stream(Resampler(8000, 16000, low_latency=False), audio, 160))
    reference = resample(audio, 8000, 16000)
    assert int(np.abs(streamed.astype(np.int32) - reference).max()) <= 2


def test_low_latency_stream_returns_every_chunk_after_startup() -> None:
    resampler = Resampler(8000, 16000)
    sizes = [len(chunk) for chunk in stream(resampler, tone(440, 8000), 160)][:-1]
    assert sizes[:2] == [0, 160]  # 30 ms of start-up delay
    assert set(sizes[2:]) == {320}


def test_fixed_rate_stream_works_in_blocks() -> None:
    sizes = [len(chunk) for chunk in stream(Resampler(8000, 16000, low_latency=False), tone(440, 8000), 160)]
    assert sizes[:5] == [0, 0, 0, 0, 0]  # why low latency is the default for live audio
    assert max(sizes) > 1000


def test_low_latency_stream_matches_one_shot_up_to_a_small_delay() -> None:
    audio = tone(440, 16000, seconds=2.0)
    streamed = np.concatenate(stream(Resampler(16000, 8000), audio, 320)).astype(np.float64)
    reference = resample(audio, 16000, 8000).astype(np.float64)
    middle = slice(1000, -1000)
    errors = {lag: np.abs(np.roll(streamed, -lag)[middle] - reference[middle]).max() for lag in range(5)}
    best = min(errors, key=lambda lag: errors[lag])
    assert best == 2  # about a quarter millisecond behind the one-shot result
    assert errors[best] < 0.05 * 10000


@pytest.mark.parametrize("low_latency", [True, False])
def test_downsampling_rejects_aliases(low_latency: bool) -> None:
    for frequency, expected_db in ((1000, 0.0), (3000, 0.0), (5000, None), (9000, None)):
        audio = tone(frequency, 22050, seconds=1.0)
        out = np.concatenate(stream(Resampler(22050, 8000, low_latency=low_latency), audio, 441))
        level = 20 * np.log10(max(rms(out[2000:6000]), 1e-9) / rms(audio))
        if expected_db is None:
            assert level < -60.0, frequency  # above 4 kHz: must not fold back into the band
        else:
            assert abs(level - expected_db) < 0.1, frequency


def test_streams_keep_separate_state() -> None:
    a_audio, b_audio = tone(440, 8000), tone(1300, 8000, amplitude=3000)
    alone_a = stream(Resampler(8000, 16000), a_audio, 160)
    alone_b = stream(Resampler(8000, 16000), b_audio, 160)
    a, b = Resampler(8000, 16000), Resampler(8000, 16000)
    for i in range(0, 8000, 160):
        assert np.array_equal(a.process(a_audio[i : i + 160]), alone_a[i // 160])
        assert np.array_equal(b.process(b_audio[i : i + 160]), alone_b[i // 160])


def test_same_rate_passes_through_and_bytes_are_accepted() -> None:
    audio = tone(440, 8000, seconds=0.02)
    resampler = Resampler(8000, 8000)
    assert resampler.passthrough
    assert np.array_equal(resampler.process(audio.tobytes()), audio)
    assert len(resampler.flush()) == 0
    assert np.array_equal(resample(audio.tobytes(), 8000, 8000), audio)
    assert len(Resampler(8000, 16000).process(audio.tobytes())) == 0  # start-up delay, but accepted


def test_bad_input() -> None:
    with pytest.raises(ResampleError, match="odd length of 3 bytes"):
        Resampler(8000, 16000).process(b"abc")
    with pytest.raises(ResampleError, match="must be 1-D int16, not 1-D float64"):
        resample(np.zeros(10), 8000, 16000)  # type: ignore[arg-type]
    with pytest.raises(ResampleError, match="sample rates must be positive"):
        Resampler(0, 8000)
    with pytest.raises(ResampleError, match="unknown soxr quality 'best'"):
        resample(b"", 8000, 16000, quality="best")
    resampler = Resampler(8000, 16000)
    resampler.flush()
    with pytest.raises(ResampleError, match="was flushed"):
        resampler.process(b"\x00\x00")
    with pytest.raises(ResampleError, match="already flushed"):
        resampler.flush()


def test_output_is_deterministic() -> None:
    audio = tone(700, 8000, amplitude=12000) + tone(2900, 8000, amplitude=3000)
    first = np.concatenate(stream(Resampler(8000, 16000), audio, 160))
    second = np.concatenate(stream(Resampler(8000, 16000), audio, 160))
    assert np.array_equal(first, second)


def test_full_scale_overshoot_is_clipped_not_wrapped() -> None:
    square = np.where(np.sin(2 * np.pi * 200 * np.arange(8000) / 8000) >= 0, 32767, -32768).astype(np.int16)
    out = resample(square, 8000, 16000)
    assert int(out.max()) == 32767
    assert int(out.min()) == -32768
    # Inside each half period the sign follows the input: an int16 wrap would flip it.
    plateau = (np.arange(16000) % 80 >= 15) & (np.arange(16000) % 80 < 25)
    assert bool(np.all(out[plateau] > 20000))
