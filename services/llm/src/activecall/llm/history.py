"""The conversation of a call in Redis, so any llm worker can carry it on.

Three keys, all under the call's hash tag:

- ``call:{id}:history``: a list of JSON messages in the Messages API's form (``role``, ``content``
  blocks), each with bookkeeping keys of its own (``turn_id``, ``pieces``: the ``say`` pieces as
  ``[seq, text]``, ``cut``: the ``played_ms`` of a barge-in) that are stripped before a request;
- ``call:{id}:llm:state``: a hash with the scene, the variables set by tools, follow-up counts and a
  pending hangup or transfer (:class:`CallState`);
- ``call:{id}:llm:answered``: the ids of the events already answered, so a worker that takes the call
  over never answers one twice.

A turn is committed in one MULTI (messages, state, answered id), so a worker that dies mid-commit
leaves either all of it or none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from activecall.bus import Bus, as_str

# Keys of a live call expire this long after their last write, in case no call.ended ever comes.
ACTIVE_TTL_S: Final = 24 * 3600
CALL_ANSWERED_NOTE: Final = "[The call was answered.]"

Message = dict[str, Any]


@dataclass(frozen=True)
class EndAction:
    """A hangup or transfer decided in a turn, done once that turn has been heard."""

    kind: str  # "hangup" or "transfer"
    turn_id: str = ""
    target: str = ""
    reason: str = ""


@dataclass
class CallState:
    scene: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    greeted: bool = False
    follow_ups: int = 0
    follow_up_turns: int = 0
    started_at: float = 0.0
    pending_end: EndAction | None = None
    end_sent: bool = False

    def to_hash(self) -> dict[str, str]:
        data = asdict(self)
        return {k: json.dumps(v) for k, v in data.items()}

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> CallState:
        data = {as_str(k): json.loads(as_str(v)) for k, v in raw.items()}
        end = data.pop("pending_end", None)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known, pending_end=EndAction(**end) if isinstance(end, dict) else None)


class ConversationStore:
    """History, state and answered ids of one call."""

    def __init__(self, bus: Bus, call_id: str) -> None:
        self.redis = bus.redis
        self.history_key = bus.keys.history(call_id)
        self.retention_s = bus.settings.ended_retention
        self.state_key = bus.keys.call_stream(call_id, "llm:state")
        self.answered_key = bus.keys.call_stream(call_id, "llm:answered")

    async def load(self) -> tuple[list[Message], CallState, set[str]]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.lrange(self.history_key, 0, -1)
        pipe.hgetall(self.state_key)
        pipe.smembers(self.answered_key)
        history, state, answered = await pipe.execute()
        messages = [json.loads(item) for item in history]
        return messages, CallState.from_hash(state), {as_str(a) for a in answered}

    async def commit(self, messages: Sequence[Message], state: CallState, answered: Sequence[str]) -> None:
        """Append a turn's messages, write the state and record the answered events, atomically."""
        pipe = self.redis.pipeline(transaction=True)
        if messages:
            pipe.rpush(self.history_key, *(_dump(m) for m in messages))
        pipe.hset(self.state_key, mapping=state.to_hash())  # type: ignore[arg-type]
        if answered:
            pipe.sadd(self.answered_key, *answered)
        self._refresh(pipe)
        await pipe.execute()

    async def rewrite(
        self, messages: Sequence[Message], state: CallState, unanswered: Sequence[str] = ()
    ) -> None:
        """Replace the whole history (after cutting a turn to what was heard, or taking back a reply
        the caller never heard: its events are ``unanswered`` again)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.history_key)
        if messages:
            pipe.rpush(self.history_key, *(_dump(m) for m in messages))
        pipe.hset(self.state_key, mapping=state.to_hash())  # type: ignore[arg-type]
        if unanswered:
            pipe.srem(self.answered_key, *unanswered)
        self._refresh(pipe)
        await pipe.execute()

    async def finish(self) -> None:
        """The call ended: keep the history as long as the call record, drop the working state."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.expire(self.history_key, self.retention_s)
        pipe.delete(self.state_key, self.answered_key)
        await pipe.execute()

    def _refresh(self, pipe: Any) -> None:
        for key in (self.history_key, self.state_key, self.answered_key):
            pipe.expire(key, ACTIVE_TTL_S)


def _dump(message: Message) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------- message helpers


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def user_message(text: str) -> Message:
    return {"role": "user", "content": [text_block(text)]}


def assistant_message(
    turn_id: str, pieces: Sequence[tuple[int, str]], tool_blocks: Iterable[dict[str, Any]] = ()
) -> Message | None:
    """What the agent said in one answer (the pieces sent to ``say``) and the tools it called; None
    when there is neither."""
    text = " ".join(t for _, t in pieces if t)
    content = ([text_block(text)] if text else []) + list(tool_blocks)
    if not content:
        return None
    return {"role": "assistant", "content": content, "turn_id": turn_id, "pieces": [list(p) for p in pieces]}


def tool_results_message(results: Iterable[tuple[str, str, bool]]) -> Message:
    blocks = [
        {"type": "tool_result", "tool_use_id": use_id, "content": text, **({"is_error": True} if err else {})}
        for use_id, text, err in results
    ]
    return {"role": "user", "content": blocks}


def request_messages(history: Iterable[Message]) -> list[Message]:
    """The history as a request wants it: bookkeeping keys stripped, consecutive messages of one role
    merged, and a user message first (the API's conversations start with the user)."""
    out: list[Message] = []
    for message in history:
        content = [dict(b) for b in message["content"]]
        if out and out[-1]["role"] == message["role"]:
            out[-1]["content"].extend(content)
        else:
            out.append({"role": message["role"], "content": content})
    if out and out[0]["role"] != "user":
        out.insert(0, user_message(CALL_ANSWERED_NOTE))
    return out


def drop_unanswered_tools(messages: list[Message]) -> list[Message]:
    """Remove tool_use blocks that have no tool_result after them (a turn cut short mid-tool), and
    messages left empty, so the history stays a valid request."""
    answered = {
        b.get("tool_use_id")
        for m in messages
        if m["role"] == "user"
        for b in m["content"]
        if isinstance(b, dict)
    }
    kept: list[Message] = []
    for message in messages:
        content = [b for b in message["content"] if b.get("type") != "tool_use" or b.get("id") in answered]
        if content:
            kept.append({**message, "content": content})
    return kept
