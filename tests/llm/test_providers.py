from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from activecall.config import LlmSettings
from activecall.llm.providers import (
    ModelRequest,
    ModelSettings,
    ProviderError,
    Providers,
    resolve_provider_name,
)
from activecall.llm.providers.anthropic import AnthropicProvider
from activecall.llm.providers.scripted import ScriptedProvider
from activecall.playbook import parse_playbook
from activecall.testing.anthropic_server import (
    ErrorReply,
    FakeAnthropicServer,
    StreamError,
    overloaded,
    tool_use,
)

PLAYBOOK = parse_playbook(
    """\
---
rules:
  - keywords: [bye]
    say: Goodbye {{ name }}!
    action: hangup
  - match: '\\bagent\\b'
    say: Connecting.
    action: transfer
    target: "sip:desk@pbx.example.com"
fallback: Say that again?
---
Be brief.

# Scene: main
Start here.

```yaml
rules:
  - keywords: [billing]
    say: Billing it is.
    action: goto
    scene: billing
```

# Scene: billing
Invoices.
""",
    "test.md",
)


def request(utterance: str = "hi", scene: str = "main") -> ModelRequest:
    return ModelRequest(
        system="Be brief.",
        messages=[{"role": "user", "content": [{"type": "text", "text": utterance}]}],
        tools=[],
        settings=ModelSettings("claude-test", 50, 0.5),
        playbook=PLAYBOOK,
        scene=scene,
        variables={"name": "Ada"},
        utterance=utterance,
    )


@pytest.mark.parametrize(
    ("configured", "playbook", "key", "chosen"),
    [
        ("auto", None, "", "scripted"),
        ("auto", None, "k", "anthropic"),
        ("scripted", None, "k", "scripted"),
        ("auto", "scripted", "k", "scripted"),
        ("scripted", "auto", "k", "anthropic"),
        ("anthropic", None, "", "scripted"),
        ("scripted", "anthropic", "k", "anthropic"),
    ],
)
def test_which_provider_answers(configured: str, playbook: str | None, key: str, chosen: str) -> None:
    assert resolve_provider_name(configured, playbook, key) == chosen


async def test_providers_are_made_once_by_name() -> None:
    providers = Providers(LlmSettings())
    assert providers.get("scripted") is providers.get("scripted")
    with pytest.raises(KeyError, match="unknown llm provider 'gpt'; known: anthropic, scripted"):
        providers.get("gpt")
    await providers.close()


@pytest.mark.parametrize(
    ("utterance", "scene", "said", "tool"),
    [
        ("ok bye now", "main", "Goodbye Ada!", ("hangup", {})),
        ("an agent please", "main", "Connecting.", ("transfer", {"target": "sip:desk@pbx.example.com"})),
        ("billing", "main", "Billing it is.", ("goto_scene", {"scene": "billing"})),
        ("billing", "billing", "Say that again?", None),
    ],
)
async def test_scripted_rules(
    utterance: str, scene: str, said: str, tool: tuple[str, dict[str, str]] | None
) -> None:
    pieces: list[str] = []

    async def sink(piece: str) -> None:
        pieces.append(piece)

    reply = await ScriptedProvider().generate(request(utterance, scene), sink)
    assert pieces == [said]
    assert [(c.name, dict(c.input)) for c in reply.tool_calls] == ([tool] if tool else [])


@pytest.fixture
async def srv() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer() as server:
        yield server


async def generate(srv: FakeAnthropicServer, max_retries: int = 2) -> tuple[list[str], object]:
    provider = AnthropicProvider(
        LlmSettings(api_key="k", base_url=srv.base_url, timeout=2.0, max_retries=max_retries),
        backoff_base_s=0.01,
    )
    pieces: list[str] = []

    async def sink(piece: str) -> None:
        pieces.append(piece)

    try:
        result: object = await provider.generate(request(), sink)
    except ProviderError as exc:
        result = exc.kind
    finally:
        await provider.close()
    return pieces, result


async def test_tool_calls_are_returned(srv: FakeAnthropicServer) -> None:
    srv.add(tool_use("transfer", {"target": "sip:x@y"}, text="Sure."))
    pieces, reply = await generate(srv)
    assert pieces == ["Sure."]
    assert [(c.name, dict(c.input)) for c in reply.tool_calls] == [("transfer", {"target": "sip:x@y"})]  # type: ignore[attr-defined]
    assert reply.stop_reason == "tool_use"  # type: ignore[attr-defined]


async def test_an_error_before_any_text_is_retried(srv: FakeAnthropicServer) -> None:
    srv.add(StreamError(), ErrorReply(500, "boom"), "Fine.")
    pieces, _ = await generate(srv)
    assert pieces == ["Fine."]
    assert len(srv.requests) == 3


async def test_an_error_after_text_is_not_retried(srv: FakeAnthropicServer) -> None:
    srv.add(StreamError(text="Let me"), "never sent")
    assert await generate(srv) == (["Let", " me"], "overloaded")
    assert len(srv.requests) == 1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (ErrorReply(400, "bad"), "bad_request"),
        (ErrorReply(401, "who?"), "bad_request"),
        (ErrorReply(529, "Overloaded", should_retry=False), "overloaded"),
    ],
)
async def test_errors_that_are_not_retried(srv: FakeAnthropicServer, reply: ErrorReply, kind: str) -> None:
    srv.add(reply, "never sent")
    assert await generate(srv) == ([], kind)
    assert len(srv.requests) == 1


async def test_retries_are_bounded(srv: FakeAnthropicServer) -> None:
    srv.add(overloaded(0.01), overloaded(0.01), "never sent")
    assert await generate(srv, max_retries=1) == ([], "overloaded")
    assert len(srv.requests) == 2
