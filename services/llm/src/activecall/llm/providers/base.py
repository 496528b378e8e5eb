"""What a model provider is, and the registry that makes one from its name.

A provider answers one request: it streams the answer's text to a sink as it arrives and returns the
tool calls the answer made. The conversation does the rest (sentences, tools, history), so a new
provider is one class and one :func:`register_provider` call.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from activecall.config import LlmSettings
from activecall.playbook import Playbook

log = logging.getLogger("activecall.llm.providers")

AUTO: Final = "auto"

TextSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ModelSettings:
    """The model settings of one call: the playbook's ``llm`` section over the ``[llm]`` config."""

    model: str
    max_tokens: int
    temperature: float


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: Mapping[str, Any]


@dataclass
class ModelRequest:
    """One request: the prompt, the conversation in Messages API form, and what rule-based
    providers need instead (the playbook, the scene, the variables and the caller's words)."""

    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    settings: ModelSettings
    playbook: Playbook
    scene: str
    variables: Mapping[str, Any]
    utterance: str = ""


@dataclass
class ModelReply:
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: str = "end_turn"


class ProviderError(Exception):
    """A request that failed for good (after any retries); ``kind`` is a metrics label."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class Provider(ABC):
    """Answers model requests. ``continues_after_tools``: tool results are sent back in a follow-up
    request (a language model); ``scripted``: the playbook's DTMF rules apply (rule-based)."""

    name: ClassVar[str] = ""
    continues_after_tools: ClassVar[bool] = True
    scripted: ClassVar[bool] = False

    @abstractmethod
    async def generate(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        """Stream the answer's text to ``on_text``; raise ProviderError when it cannot be had."""

    async def close(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections."""


ProviderFactory = Callable[[LlmSettings], Provider]
_REGISTRY: dict[str, ProviderFactory] = {}


def register_provider(name: str, factory: ProviderFactory) -> None:
    _REGISTRY[name] = factory


def provider_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def resolve_provider_name(configured: str, from_playbook: str | None, api_key: str) -> str:
    """The provider of a call: the playbook's choice over the config's; ``auto`` means Anthropic when
    an API key is configured, else the scripted rules. Anthropic without a key falls back to the
    scripted rules with a warning, so the call is still answered."""
    name = from_playbook or configured
    if name == AUTO:
        return "anthropic" if api_key else "scripted"
    if name == "anthropic" and not api_key:
        log.warning(
            "llm provider anthropic needs an API key (llm.api_key, ANTHROPIC_API_KEY); using scripted"
        )
        return "scripted"
    return name


class Providers:
    """The provider instances of one process, made on first use and shared by its calls."""

    def __init__(self, settings: LlmSettings) -> None:
        self.settings = settings
        self._made: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        provider = self._made.get(name)
        if provider is None:
            factory = _REGISTRY.get(name)
            if factory is None:
                raise KeyError(f"unknown llm provider {name!r}; known: {', '.join(provider_names())}")
            provider = self._made[name] = factory(self.settings)
        return provider

    async def close(self) -> None:
        for provider in self._made.values():
            await provider.close()
        self._made.clear()
