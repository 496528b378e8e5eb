"""Model providers behind one small interface, made by name (``[llm] provider``, ``llm.provider``)."""

from __future__ import annotations

from activecall.config import LlmSettings
from activecall.llm.providers.base import (
    ModelReply,
    ModelRequest,
    ModelSettings,
    Provider,
    ProviderError,
    Providers,
    ToolCall,
    register_provider,
    resolve_provider_name,
)
from activecall.llm.providers.scripted import ScriptedProvider

__all__ = [
    "ModelReply",
    "ModelRequest",
    "ModelSettings",
    "Provider",
    "ProviderError",
    "Providers",
    "ToolCall",
    "register_provider",
    "resolve_provider_name",
]


def _anthropic(settings: LlmSettings) -> Provider:
    try:
        from activecall.llm.providers.anthropic import AnthropicProvider
    except ImportError as exc:  # the SDK is a dependency of activecall-llm, but images get trimmed
        raise RuntimeError(f"the anthropic provider needs the SDK: pip install anthropic ({exc})") from exc
    return AnthropicProvider(settings)


register_provider("anthropic", _anthropic)
register_provider("scripted", ScriptedProvider)
