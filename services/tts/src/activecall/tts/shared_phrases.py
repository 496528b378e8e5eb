"""The fixed phrases' speech in Redis, so that one tts worker synthesizes them for all.

A tts worker pins every playbook's fixed phrases before it takes sessions
(:mod:`activecall.tts.presynthesis`). Synthesized by each worker, that took one restarted worker
half a minute of both cores on a small host, starving the workers that were carrying its calls.
Each phrase's PCM is stored once under a digest of (engine, voice, rate, text), and a starting worker
loads what is there and synthesizes only the rest. Entries expire ``TTL_S`` after their last use, so
phrases no longer in a playbook go away. Redis trouble is never fatal here: the phrase is then
synthesized, as before.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Final

from activecall.bus import REDIS_DOWN, Bus

log = logging.getLogger("activecall.tts.shared_phrases")

TTL_S: Final = 7 * 24 * 3600
CacheKey = tuple[str, str, str, int]  # engine, voice, text, rate


def digest(key: CacheKey) -> str:
    engine, voice, text, rate = key
    return hashlib.sha256(f"{engine}\0{voice}\0{rate}\0{text}".encode()).hexdigest()[:32]


class SharedPhrases:
    """Get and put a phrase's PCM by its cache key."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def get(self, key: CacheKey) -> bytes | None:
        try:
            pcm = await self.bus.redis.getex(self.bus.keys.tts_phrase(digest(key)), ex=TTL_S)
        except REDIS_DOWN as exc:
            log.warning("shared phrases unreachable", extra={"error": str(exc)})
            return None
        return pcm if isinstance(pcm, bytes) and pcm else None

    async def put(self, key: CacheKey, pcm: bytes) -> None:
        try:
            await self.bus.redis.set(self.bus.keys.tts_phrase(digest(key)), pcm, ex=TTL_S)
        except REDIS_DOWN as exc:
            log.warning("shared phrases unreachable", extra={"error": str(exc)})
