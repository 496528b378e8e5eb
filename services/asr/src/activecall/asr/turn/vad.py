"""Frame voice activity detection for the turn detector: is this 20 ms frame speech?

The asr decides the end of a turn itself, so it needs its own frame-level speech flag (services meet
only on the bus; the media worker's VAD events are too coarse, 500 ms late, for this). Two engines
behind one small interface:

- ``webrtc``: the WebRTC GMM detector (webrtcvad-wheels); microseconds per frame, but it calls
  breath and line noise speech now and then.
- ``silero``: the Silero VAD network (the ONNX file of the silero-vad wheel, on onnxruntime); about
  a tenth of a millisecond per 32 ms window, closer to the speech a listener hears. It takes 256
  samples at 8 kHz (512 at 16 kHz) with the last 32 (64) samples of the previous window as context
  and a recurrent state, so a stream buffers the 20 ms frames and every frame gets the probability
  of the newest window.

A :class:`FrameVad` belongs to one call (the engines keep per-stream state); the Silero session is
shared by the process.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import deque
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from activecall.audio import pcm16_to_float32, resample_float

VAD_ENGINES: Final = ("webrtc", "silero")
SILERO_FILE: Final = "data/silero_vad.onnx"
SILERO_THRESHOLD: Final = 0.5
SILERO_RATES: Final = (8000, 16000)
WEBRTC_RATES: Final = (8000, 16000, 32000, 48000)


class FrameVad(Protocol):
    """Classifies the frames of one audio stream in order."""

    def is_speech(self, frame: bytes) -> bool:
        """True if this frame (PCM16 mono, 10-30 ms at the stream's rate) holds speech."""
        ...


class WebRtcFrameVad:
    """webrtcvad on the stream's frames; ``aggressiveness`` 0 (most speech) to 3 (least)."""

    def __init__(self, sample_rate: int, aggressiveness: int = 2) -> None:
        import webrtcvad

        self.sample_rate = sample_rate if sample_rate in WEBRTC_RATES else 16000
        self.source_rate = sample_rate
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: bytes) -> bool:
        if self.source_rate != self.sample_rate:
            frame = _resampled(frame, self.source_rate, self.sample_rate)
        return bool(self._vad.is_speech(frame, self.sample_rate))


def silero_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / SILERO_FILE
        if path.is_file():
            return path
    raise RuntimeError("Silero VAD model not found: pip install --no-deps silero-vad (make venv installs it)")


_silero_session: Any = None
_silero_lock = threading.Lock()


def silero_session() -> Any:
    """The process's one Silero session (its state travels with each call, not in the session)."""
    global _silero_session
    with _silero_lock:
        if _silero_session is None:
            import onnxruntime  # type: ignore[import-untyped]

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            _silero_session = onnxruntime.InferenceSession(
                str(silero_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
        return _silero_session


class SileroFrameVad:
    """Silero VAD over a stream of frames; ``threshold`` is the speech probability that counts."""

    def __init__(self, sample_rate: int, threshold: float = SILERO_THRESHOLD) -> None:
        self.source_rate = sample_rate
        self.sample_rate = sample_rate if sample_rate in SILERO_RATES else 16000
        self.window = 256 if self.sample_rate == 8000 else 512
        self.context_size = 32 if self.sample_rate == 8000 else 64
        self.threshold = threshold
        self.session = silero_session()
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.context_size, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._rate = np.array(self.sample_rate, dtype=np.int64)
        self.probability = 0.0

    def is_speech(self, frame: bytes) -> bool:
        samples = pcm16_to_float32(frame)
        if self.source_rate != self.sample_rate:
            samples = resample_float(samples, self.source_rate, self.sample_rate)
        self._pending = np.concatenate([self._pending, samples])
        while self._pending.size >= self.window:
            chunk, self._pending = self._pending[: self.window], self._pending[self.window :]
            self.probability = self._run(chunk)
        return self.probability >= self.threshold

    def _run(self, chunk: np.ndarray[Any, Any]) -> float:
        x = np.concatenate([self._context, chunk])[None, :].astype(np.float32)
        output, self._state = self.session.run(None, {"input": x, "state": self._state, "sr": self._rate})
        self._context = chunk[-self.context_size :]
        return float(np.asarray(output).reshape(-1)[0])


def _resampled(frame: bytes, from_rate: int, to_rate: int) -> bytes:
    from activecall.audio import float_to_pcm16

    return float_to_pcm16(resample_float(pcm16_to_float32(frame), from_rate, to_rate))


class LoudnessGate:
    """A frame is speech only if the detector says so and it is loud enough for speech.

    Both detectors hold on to speech for a while after it ends (webrtcvad's hangover is about
    100 ms): the quiet tail of the last syllable, then the line's own noise. Every such frame would
    add its length to the turn latency, since the silence that ends a turn is counted from the last
    speech frame. A frame more than ``below_peak_db`` under the loudest frame of the last
    ``memory_frames`` (about 2 s), or under ``floor_dbfs``, does not count as speech.
    """

    def __init__(
        self,
        inner: FrameVad,
        below_peak_db: float = 38.0,
        floor_dbfs: float = -55.0,
        memory_frames: int = 100,
    ) -> None:
        self.inner = inner
        self.below_peak_db = below_peak_db
        self.floor_dbfs = floor_dbfs
        self._levels: deque[float] = deque(maxlen=memory_frames)

    def is_speech(self, frame: bytes) -> bool:
        speech = self.inner.is_speech(frame)  # always asked: the engines keep state across frames
        level = frame_dbfs(frame)
        self._levels.append(level)
        return speech and level >= max(self.floor_dbfs, max(self._levels) - self.below_peak_db)


def frame_dbfs(frame: bytes) -> float:
    """The frame's RMS level in dB relative to full scale (PCM16)."""
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    if not samples.size:
        return -120.0
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20.0 * float(np.log10(max(rms, 1e-3) / 32768.0))


def create_frame_vad(name: str, sample_rate: int) -> FrameVad:
    """A detector for one stream: ``webrtc`` or ``silero``, behind a :class:`LoudnessGate`."""
    if name == "webrtc":
        return LoudnessGate(WebRtcFrameVad(sample_rate))
    if name == "silero":
        return LoudnessGate(SileroFrameVad(sample_rate))
    raise ValueError(f"unknown vad {name!r}; known: {', '.join(VAD_ENGINES)}")
