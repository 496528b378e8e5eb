"""Where the time of one answer went, stage by stage, from the end of the caller's speech.

Every stage is given in milliseconds after the caller's last speech frame (or key press) arrived
at the media worker. The media worker measures the last one itself: ``playback.started`` carries
``latency_ms``, the time from that arrival to the answer's first RTP packet leaving, on one
monotonic clock, which is what the caller hears less the network. The other stages are wall-clock
stamps of the services' events, placed on the same axis through that anchor
(``playback.started.ts - latency_ms``):

- ``end_of_turn``: the asr decided the caller had finished (``transcript.final.decided_ts``; for a
  key press, the digit's event);
- ``asr_final``: the recognizer's final result was out (``transcript.final.ts``);
- ``llm_first_token``: the first text of the answer (the provider's first delta, or a known text);
- ``first_sentence``: the first sentence went to the tts;
- ``tts_first_audio``: the tts had the first sentence's audio (``say.synthesized`` of piece 0);
- ``first_packet``: the first RTP packet of the answer left the media worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

STAGES: Final = (
    "end_of_turn",
    "asr_final",
    "llm_first_token",
    "first_sentence",
    "tts_first_audio",
    "first_packet",
)


@dataclass
class TurnTimer:
    """The wall-clock stamps of one answer's stages, filled in as its events arrive."""

    kind: str
    stamps: dict[str, float] = field(default_factory=dict)

    def mark(self, stage: str, at: float | None = None) -> None:
        """The first time a stage is reached counts."""
        self.stamps.setdefault(stage, time.time() if at is None else at)

    def stages(self, started_ts: float, latency_ms: int) -> dict[str, int]:
        """Every stage in ms after the caller's last speech, once the first packet has left."""
        anchor = started_ts - latency_ms / 1000
        stages: dict[str, int] = {
            name: round((self.stamps[name] - anchor) * 1000) for name in STAGES if name in self.stamps
        }
        stages["first_packet"] = latency_ms
        return stages
