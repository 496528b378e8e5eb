"""Sending one turn's text to ``call:{id}:say``, piece by piece.

Pieces carry the turn id and a sequence number from 0; the last piece of a turn has ``last`` set
(when the end of a streamed answer is only known after its last sentence went out, the closing piece
is empty). A ``turn.started`` event goes on the call's events stream with the first piece.

A worker that takes a call over may answer an event whose answer was partly sent before the first
worker died. Turn ids are derived from the event, so the new worker knows the turn: it reads what
was sent for it and does not send those sequence numbers again, and what it records as said is
what went out, whichever worker sent it.
"""

from __future__ import annotations

from activecall.bus import Bus, with_reconnect
from activecall.messages import SayText, TurnStarted

# How far back the say stream is searched for the pieces of a resumed turn.
RESUME_SCAN: int = 500


class Speaker:
    def __init__(
        self,
        bus: Bus,
        call_id: str,
        turn_id: str,
        sent: dict[int, SayText] | None = None,
        interruptible: bool = True,
        not_before_ms: int = 0,
    ) -> None:
        self.bus = bus
        self.interruptible = interruptible
        self.not_before_ms = not_before_ms  # for the turn's first piece: its audio waits until then
        self.call_id = call_id
        self.turn_id = turn_id
        self.stream = bus.keys.say(call_id)
        self.pieces: list[tuple[int, str]] = []
        self._sent = sent or {}
        self._closed = any(p.last for p in self._sent.values())
        self._started = bool(self._sent)

    @property
    def said(self) -> bool:
        return bool(self.pieces)

    @property
    def text(self) -> str:
        return " ".join(t for _, t in self.pieces)

    async def say(self, text: str, last: bool = False) -> None:
        """Send one piece (a sentence)."""
        seq = len(self.pieces)
        previous = self._sent.get(seq)
        if previous is not None:
            self.pieces.append((seq, previous.text))
            return
        self.pieces.append((seq, text))
        await self._publish(seq, text, last)

    async def close(self) -> None:
        """Mark the end of the turn with an empty last piece, if anything was said."""
        # Pieces a previous worker sent beyond what this answer had were heard all the same.
        for seq in sorted(s for s in self._sent if s >= len(self.pieces)):
            if self._sent[seq].text:
                self.pieces.append((seq, self._sent[seq].text))
        if self.pieces and not self._closed:
            await self._publish(max([*self._sent, *(s for s, _ in self.pieces)]) + 1, "", True)

    async def say_all(self, sentences: list[str]) -> None:
        """Send a text known in full: the last sentence closes the turn."""
        for i, sentence in enumerate(sentences):
            await self.say(sentence, last=i == len(sentences) - 1)

    async def _publish(self, seq: int, text: str, last: bool) -> None:
        if self._closed:
            return
        if not self._started:
            self._started = True
            started = TurnStarted(call_id=self.call_id, turn_id=self.turn_id)
            await with_reconnect(lambda: self.bus.emit(self.call_id, started), "turn.started")
        piece = SayText(
            call_id=self.call_id,
            turn_id=self.turn_id,
            seq=seq,
            text=text,
            last=last,
            interruptible=self.interruptible,
            not_before_ms=self.not_before_ms if seq == 0 else 0,
        )
        await with_reconnect(lambda: self.bus.publish(self.stream, piece), "say")
        self._closed = last


async def sent_pieces(bus: Bus, call_id: str, turn_id: str) -> dict[int, SayText]:
    """The pieces of a turn already on the say stream (a resumed turn), by sequence number."""
    stream = bus.keys.say(call_id)
    raw = await bus.redis.xrevrange(stream, count=RESUME_SCAN)
    found: dict[int, SayText] = {}
    for entry in bus.decode_entries(stream, raw or []):
        message = entry.message
        if isinstance(message, SayText) and message.turn_id == turn_id:
            found.setdefault(message.seq, message)
    return found
