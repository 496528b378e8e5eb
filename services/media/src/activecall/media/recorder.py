"""Call recording: a stereo 16-bit WAV, caller on the left channel, agent on the right.

The pacing tick is the recording's clock: every tick writes one frame per channel, the agent frame
sent on that tick and the oldest caller frame released by the jitter buffer (silence when there is
none), so both channels stay aligned however the caller's packets arrived. Samples are buffered and
written about once a second.
"""

from __future__ import annotations

import wave
from collections import deque
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]

MAX_CALLER_BACKLOG: Final = 10  # frames; more means the jitter buffer caught up after a stall
WRITE_EVERY_FRAMES: Final = 50


class StereoRecorder:
    def __init__(self, path: Path, sample_rate: int = 8000, frame_samples: int = 160) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.frame_samples = frame_samples
        self._silence = np.zeros(frame_samples, dtype=np.int16)
        self._caller: deque[Samples] = deque(maxlen=MAX_CALLER_BACKLOG)
        self._pending: list[Samples] = []
        self.frames = 0
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed by close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)

    def caller(self, pcm: Samples) -> None:
        """A caller frame released by the jitter buffer."""
        self._caller.append(pcm)

    def tick(self, agent: Samples | None) -> None:
        """One pacing tick: the agent frame sent (None: silence) against the oldest caller frame."""
        left = self._caller.popleft() if self._caller else self._silence
        right = self._silence if agent is None else agent
        frame = np.empty(2 * self.frame_samples, dtype="<i2")
        frame[0::2] = _fit(left, self.frame_samples)
        frame[1::2] = _fit(right, self.frame_samples)
        self._pending.append(frame)
        self.frames += 1
        if len(self._pending) >= WRITE_EVERY_FRAMES:
            self._write()

    def _write(self) -> None:
        if self._pending:
            self._wav.writeframes(np.concatenate(self._pending).tobytes())
            self._pending.clear()

    def close(self) -> None:
        self._write()
        self._wav.close()


def _fit(pcm: Samples, samples: int) -> Samples:
    if len(pcm) == samples:
        return pcm
    out = np.zeros(samples, dtype=np.int16)
    out[: min(samples, len(pcm))] = pcm[:samples]
    return out
