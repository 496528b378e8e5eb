"""Voice activity detection: a frame classifier interface, its webrtcvad engine, and a speech
start/stop state machine on top."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

WEBRTCVAD_SAMPLE_RATES: Final = (8000, 16000, 32000, 48000)
WEBRTCVAD_FRAME_MS: Final = (10, 20, 30)
_FRAME_BYTES: Final = {
    rate: frozenset(2 * rate * ms // 1000 for ms in WEBRTCVAD_FRAME_MS) for rate in WEBRTCVAD_SAMPLE_RATES
}

Frame = bytes | npt.NDArray[np.int16]


class VadError(ValueError):
    """A frame the detector cannot classify (length, rate or dtype)."""


class Vad(Protocol):
    """Classifies one frame of mono PCM16 audio."""

    def is_speech(self, frame: Frame, sample_rate: int) -> bool: ...


_INT16: Final = np.dtype(np.int16)


def _frame_bytes(frame: Frame) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if frame.dtype is _INT16:  # native order, the per-frame case: no conversion
        return frame.tobytes()
    if frame.dtype != _INT16:
        raise VadError(f"frame must be int16, not {frame.dtype}")
    return frame.astype("<i2").tobytes()


class WebRtcVad:
    """The WebRTC GMM voice detector; `aggressiveness` 0 (most speech) to 3 (least)."""

    def __init__(self, aggressiveness: int = 2) -> None:
        try:
            import webrtcvad  # a C extension: loaded only where a detector is built
        except ImportError as exc:
            raise ImportError("webrtcvad is missing: pip install webrtcvad-wheels") from exc

        if not 0 <= aggressiveness <= 3:
            raise VadError(f"webrtcvad aggressiveness must be 0..3, not {aggressiveness}")
        self.aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        # The extension's own entry point: webrtcvad.Vad.is_speech only recomputes the length in Python.
        self._process = webrtcvad._webrtcvad.process
        self._handle = self._vad._vad

    def is_speech(self, frame: Frame, sample_rate: int) -> bool:
        """True if the 10, 20 or 30 ms frame at 8, 16, 32 or 48 kHz holds speech."""
        data = frame if type(frame) is bytes else _frame_bytes(frame)
        size = len(data)
        lengths = _FRAME_BYTES.get(sample_rate)
        if lengths is None:
            raise VadError(f"webrtcvad does not take {sample_rate} Hz")
        if size not in lengths:
            raise VadError(f"a frame of {size} bytes at {sample_rate} Hz is not 10, 20 or 30 ms")
        return bool(self._process(self._handle, sample_rate, data, size >> 1))


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began at `time_ms` of the stream's audio; confirmed at `detected_ms`."""

    time_ms: int
    detected_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    """Speech ended at `time_ms` (end of the last speech frame); confirmed at `detected_ms`."""

    time_ms: int
    detected_ms: int


SpeechEvent = SpeechStarted | SpeechStopped


class SpeechState(enum.Enum):
    SILENCE = "silence"
    SPEECH = "speech"


class SpeechDetector:
    """Debounces per-frame VAD decisions into speech start and stop events.

    Speech starts once `start_ms` of consecutive speech frames were seen and stops once `stop_ms` of
    consecutive non-speech frames followed. Times count the audio fed so far, from 0.
    """

    def __init__(
        self,
        vad: Vad,
        sample_rate: int = 8000,
        *,
        frame_ms: int = 20,
        start_ms: int = 200,
        stop_ms: int = 500,
    ) -> None:
        self.vad = vad
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.start_ms = start_ms
        self.stop_ms = stop_ms
        self.state = SpeechState.SILENCE
        self.position_ms = 0
        self._run_ms = 0  # length of the current run of frames contradicting the state

    def process(self, frame: Frame) -> SpeechEvent | None:
        """Classify one frame of `frame_ms`; returns the event this frame confirms, if any."""
        speech = self.vad.is_speech(frame, self.sample_rate)
        self.position_ms += self.frame_ms
        if speech == (self.state is SpeechState.SPEECH):
            self._run_ms = 0
            return None
        self._run_ms += self.frame_ms
        if self.state is SpeechState.SILENCE and self._run_ms >= self.start_ms:
            return self._switch(SpeechState.SPEECH)
        if self.state is SpeechState.SPEECH and self._run_ms >= self.stop_ms:
            return self._switch(SpeechState.SILENCE)
        return None

    def reset(self) -> None:
        self.state = SpeechState.SILENCE
        self.position_ms = 0
        self._run_ms = 0

    def _switch(self, state: SpeechState) -> SpeechEvent:
        began_ms = self.position_ms - self._run_ms
        self._set_state(state)
        self._run_ms = 0
        if state is SpeechState.SPEECH:
            return SpeechStarted(began_ms, self.position_ms)
        return SpeechStopped(began_ms, self.position_ms)

    def _set_state(self, state: SpeechState) -> None:
        logger.debug("speech detector %s -> %s at %d ms", self.state.value, state.value, self.position_ms)
        self.state = state
