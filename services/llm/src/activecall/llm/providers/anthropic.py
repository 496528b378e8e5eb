"""Claude through the official SDK: streaming Messages API requests with tools, retried on overload.

The SDK's own retries are off (``max_retries=0``): this provider retries 429, 5xx and 529 itself, so
it can count every failure by kind, honour ``retry-after`` and ``x-should-retry``, and never retry a
request whose text already reached the caller. A request that goes ``[llm] timeout`` seconds without
any event (before or during the stream) is a timeout and is not retried: the caller is waiting.

The sampling temperature is sent only by SDKs that still have the parameter: SDK 2.x speaks API
version 2026-10-21, which refuses sampling parameters (HTTP 400), and has dropped it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from typing import Any, Final

import anthropic
from anthropic import AsyncAnthropic
from anthropic.resources.messages import AsyncMessages

from activecall.config import LlmSettings
from activecall.llm import metrics
from activecall.llm.providers.base import (
    ModelReply,
    ModelRequest,
    Provider,
    ProviderError,
    TextSink,
    ToolCall,
)

log = logging.getLogger("activecall.llm.anthropic")

RETRYABLE: Final = frozenset({"rate_limited", "overloaded", "server_error", "connection"})
MAX_RETRY_AFTER_S: Final = 5.0
# The SDK's own HTTP timeout is a backstop behind the idle timeout enforced here.
SDK_TIMEOUT_MARGIN_S: Final = 2.0
SENDS_TEMPERATURE: Final = "temperature" in inspect.signature(AsyncMessages.stream).parameters


class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(
        self, settings: LlmSettings, backoff_base_s: float = 0.25, backoff_cap_s: float = 2.0
    ) -> None:
        self.settings = settings
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._client: AsyncAnthropic | None = None

    @property
    def client(self) -> AsyncAnthropic:
        if self._client is None:
            self._client = AsyncAnthropic(
                api_key=self.settings.api_key,
                base_url=self.settings.base_url or None,
                max_retries=0,
                timeout=self.settings.timeout + SDK_TIMEOUT_MARGIN_S,
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def generate(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        """One answer, retried while nothing of it has been passed on; ProviderError when it fails."""
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        emitted = False

        async def sink(delta: str) -> None:
            nonlocal emitted
            if not emitted:
                metrics.TIME_TO_FIRST_TOKEN.labels(self.name).observe(loop.time() - sent_at)
                emitted = True
            await on_text(delta)

        attempt = 0
        while True:
            try:
                return await self._stream(request, sink)
            except TimeoutError:
                metrics.PROVIDER_ERRORS.labels(self.name, "timeout").inc()
                raise ProviderError("timeout", f"no answer within {self.settings.timeout:g} s") from None
            except anthropic.APIError as exc:
                kind = error_kind(exc)
                metrics.PROVIDER_ERRORS.labels(self.name, kind).inc()
                if emitted or attempt >= self.settings.max_retries or not should_retry(exc, kind):
                    raise ProviderError(kind, str(exc)) from exc
                delay = self._delay(attempt, exc)
                log.warning("model request failed; retrying", extra={"kind": kind, "delay_s": delay})
                await asyncio.sleep(delay)
                attempt += 1

    async def _stream(self, request: ModelRequest, sink: TextSink) -> ModelReply:
        loop = asyncio.get_running_loop()
        idle = self.settings.timeout
        reply = ModelReply()
        async with asyncio.timeout(idle) as deadline:
            async with self.client.messages.stream(**self._arguments(request)) as stream:
                async for event in stream:
                    deadline.reschedule(loop.time() + idle)
                    if event.type == "text":
                        await sink(event.text)
                    elif event.type == "content_block_stop" and event.content_block.type == "tool_use":
                        block = event.content_block
                        reply.tool_calls.append(ToolCall(block.id, block.name, _as_dict(block.input)))
                    elif event.type == "message_delta" and event.delta.stop_reason:
                        reply.stop_reason = event.delta.stop_reason
        return reply

    def _arguments(self, request: ModelRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.settings.model,
            "max_tokens": request.settings.max_tokens,
            "messages": request.messages,
        }
        if SENDS_TEMPERATURE:
            arguments["temperature"] = request.settings.temperature
        if request.system:
            arguments["system"] = request.system
        if request.tools:
            arguments["tools"] = request.tools
        return arguments

    def _delay(self, attempt: int, exc: anthropic.APIError) -> float:
        retry_after = _retry_after(exc)
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


def error_kind(exc: anthropic.APIError) -> str:
    """The metrics label of a failed request."""
    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection"
    if not isinstance(exc, anthropic.APIStatusError):
        return "other"
    status, error_type = exc.status_code, _error_type(exc.body)
    if status == 429 or error_type == "rate_limit_error":
        return "rate_limited"
    if status == 529 or error_type == "overloaded_error":
        return "overloaded"
    if status >= 500 or error_type == "api_error":
        return "server_error"
    # An error event inside a stream that began with 200 and names no known type.
    return "stream_error" if status < 400 else "bad_request"


def should_retry(exc: anthropic.APIError, kind: str) -> bool:
    if kind not in RETRYABLE:
        return False
    response = getattr(exc, "response", None)
    return response is None or response.headers.get("x-should-retry", "").lower() != "false"


def _retry_after(exc: anthropic.APIError) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _error_type(body: object) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else ""


def _as_dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
