"""One agent turn: what is said, sentence by sentence, and the messages it adds to the history.

A turn either answers with the provider (the caller said something, or pressed a key the playbook
leaves to the model) or says a text known in advance (greeting, DTMF lines, follow-ups). An answer
may take several requests: when the model calls tools, their results go back in a follow-up request
(for providers that continue after tools) until it answers without tools, ends the call, or
:data:`MAX_ROUNDS` requests were made. If the provider fails before anything was said, a short
apology is said instead of silence.

The turn only produces data (pieces sent, messages); the conversation commits it, so a barge-in can
cancel the task at any point and commit what was heard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from activecall.bus import Bus
from activecall.llm.history import (
    Message,
    assistant_message,
    drop_unanswered_tools,
    tool_results_message,
    user_message,
)
from activecall.llm.providers.base import ModelReply, ModelRequest, Provider, ProviderError, ToolCall
from activecall.llm.speech import Speaker, sent_pieces
from activecall.llm.timings import TurnTimer
from activecall.llm.tools import ToolRunner
from activecall.sentences import APOLOGY, SentenceSplitter, split_text

log = logging.getLogger("activecall.llm.turns")

MAX_ROUNDS: Final = 5

RequestBuilder = Callable[[list[Message], str], ModelRequest]


@dataclass
class Turn:
    """An agent turn. ``entry_id`` is the event it answers (None for greeting and follow-ups)."""

    turn_id: str
    kind: str
    entry_id: str | None = None
    speaker: Speaker | None = None
    messages: list[Message] = field(default_factory=list)
    round_start: int | None = None  # index in speaker.pieces where the open answer began
    result: str = "ok"
    task: asyncio.Task[None] | None = None
    committed: bool = False
    interruptible: bool = True
    timer: TurnTimer | None = None  # an answer to the caller: its stages are timed
    withdrawn: bool = False  # taken back before it was heard (the caller went on speaking)
    merged_ids: tuple[str, ...] = ()  # earlier caller events this turn answers with ``entry_id``
    not_before_ms: int = 0  # the caller's media clock before which its audio must not start

    @property
    def entry_ids(self) -> tuple[str, ...]:
        return (*self.merged_ids, self.entry_id) if self.entry_id else self.merged_ids

    def mark(self, stage: str) -> None:
        if self.timer is not None:
            self.timer.mark(stage)

    @property
    def said(self) -> bool:
        return self.speaker is not None and self.speaker.said

    @property
    def text(self) -> str:
        return self.speaker.text if self.speaker is not None else ""

    def close_round(self, tool_blocks: list[dict[str, object]] | None = None) -> None:
        """Record the open answer's pieces (and tool calls) as an assistant message."""
        if self.round_start is None or self.speaker is None:
            return
        message = assistant_message(self.turn_id, self.speaker.pieces[self.round_start :], tool_blocks or ())
        if message is not None:
            self.messages.append(message)
        self.round_start = None

    def partial_messages(self) -> list[Message]:
        """The messages so far, including what was said of an answer cut short."""
        self.close_round()
        return drop_unanswered_tools(self.messages)


class TurnRunner:
    """Runs turns for one call."""

    def __init__(
        self,
        bus: Bus,
        call_id: str,
        provider: Provider,
        tools: ToolRunner,
        request_for: RequestBuilder,
        resuming: bool = False,
    ) -> None:
        self.bus = bus
        self.call_id = call_id
        self.provider = provider
        self.tools = tools
        self.request_for = request_for
        self.resuming = resuming

    async def speaker(self, turn: Turn) -> Speaker:
        """The turn's speaker; a resumed session first looks up what was already sent for the turn."""
        if turn.speaker is None:
            sent = await sent_pieces(self.bus, self.call_id, turn.turn_id) if self.resuming else None
            turn.speaker = Speaker(
                self.bus, self.call_id, turn.turn_id, sent, turn.interruptible, turn.not_before_ms
            )
        return turn.speaker

    async def say(
        self, turn: Turn, text: str, note: str | None = None, action: ToolCall | None = None
    ) -> None:
        """A turn with a known text: ``note`` is the caller's side for the history (a key press)."""
        speaker = await self.speaker(turn)
        if note:
            turn.messages.append(user_message(note))
        turn.round_start = len(speaker.pieces)
        turn.mark("llm_first_token")
        turn.mark("first_sentence")
        await speaker.say_all(split_text(text))
        turn.close_round()
        if action is not None:
            await self.tools.run(action, turn.turn_id)
        await speaker.close()
        if not turn.said:
            turn.result = "silent"

    async def answer(self, turn: Turn, user_text: str, utterance: str) -> None:
        """A turn answered by the provider; ``user_text`` goes to the history as the caller's message."""
        speaker = await self.speaker(turn)
        turn.messages.append(user_message(user_text))
        for _ in range(MAX_ROUNDS):
            reply = await self._request(turn, speaker, utterance)
            utterance = ""
            if reply is None or not reply.tool_calls or not await self._run_tools(turn, reply):
                break
        await speaker.close()
        if not turn.said and turn.result == "ok":
            turn.result = "silent"

    async def _request(self, turn: Turn, speaker: Speaker, utterance: str) -> ModelReply | None:
        splitter = SentenceSplitter()

        async def on_text(delta: str) -> None:
            turn.mark("llm_first_token")
            for sentence in splitter.feed(delta):
                turn.mark("first_sentence")
                await speaker.say(sentence)

        turn.round_start = len(speaker.pieces)
        try:
            reply = await self.provider.generate(self.request_for(turn.messages, utterance), on_text)
        except ProviderError as exc:
            # The unfinished sentence is dropped: half a sentence is worse than none.
            log.warning("model request failed", extra={"call_id": self.call_id, "error": str(exc)})
            turn.close_round()
            await self._apologize(turn, speaker)
            return None
        rest = splitter.flush()
        if rest:
            turn.mark("first_sentence")
            await speaker.say(rest)
        blocks: list[dict[str, object]] = [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.input)} for c in reply.tool_calls
        ]
        turn.close_round(blocks if self.provider.continues_after_tools else None)
        return reply

    async def _apologize(self, turn: Turn, speaker: Speaker) -> None:
        turn.result = "apology"
        if speaker.said:
            return
        turn.round_start = len(speaker.pieces)
        await speaker.say(APOLOGY, last=True)
        turn.close_round()

    async def _run_tools(self, turn: Turn, reply: ModelReply) -> bool:
        """Carry out the reply's tool calls; True when the model should be asked again."""
        results: list[tuple[str, str, bool]] = []
        ends_call = False
        for call in reply.tool_calls:
            outcome = await self.tools.run(call, turn.turn_id)
            results.append((call.id, outcome.result, outcome.is_error))
            ends_call = ends_call or outcome.ends_call
        if not self.provider.continues_after_tools:
            return False
        turn.messages.append(tool_results_message(results))
        # Once the call is ending there is nothing more to say: the last words are already out.
        return not ends_call
