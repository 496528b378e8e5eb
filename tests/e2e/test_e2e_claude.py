"""The same conversation with the Anthropic provider: the llm service's real `anthropic` client streams
from a local server speaking the Messages API, and Claude's hangup tool call ends the call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_calls import report
from test_conversation import check_conversation, converse

from activecall.testing.anthropic_server import FakeAnthropicServer, RecordedRequest, Reply, text, tool_use
from activecall.testing.system import System, running_system

API_KEY = "sk-ant-e2e-test"
HOURS = "We are open Monday to Friday, from nine in the morning to five in the evening."
GOODBYE = "Thank you for calling Example Corp. Goodbye!"


def last_caller_words(request: RecordedRequest) -> str:
    content: Any = request.body["messages"][-1]["content"]
    if isinstance(content, str):
        return content.lower()
    return " ".join(str(block.get("text", "")) for block in content if isinstance(block, dict)).lower()


def claude(request: RecordedRequest) -> Reply:
    words = last_caller_words(request)
    if "bye" in words or "thank you" in words:
        return tool_use("hangup", {"reason": "caller said goodbye"}, text=GOODBYE)
    if "hours" in words or "open" in words:
        return text(HOURS)
    return text("Sorry, could you say that again?")


@pytest.fixture(scope="module")
def claude_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, FakeAnthropicServer]]:
    with FakeAnthropicServer(claude) as server:
        root = tmp_path_factory.mktemp("claude-system")
        extra = f'[llm]\nbase_url = "{server.base_url}"\n'
        with running_system(root, extra_config=extra, env={"ANTHROPIC_API_KEY": API_KEY}) as system:
            yield system, server


def test_claude_answers_and_hangs_up(
    claude_system: tuple[System, FakeAnthropicServer], tmp_path: Path
) -> None:
    system, server = claude_system
    phone, call_id = converse(system, tmp_path, "claude-asker")
    check_conversation(system, phone, call_id, "caller said goodbye")

    requests = server.message_requests
    report(f"the llm service sent {len(requests)} streaming requests to the Messages API")
    assert len(requests) >= 2 and all(r.streaming and r.api_key == API_KEY for r in requests)
    first = requests[0].body
    assert "friendly phone assistant of Example Corp" in str(first["system"])
    assert "hangup" in {tool["name"] for tool in first["tools"]}
    assert "opening hours" in last_caller_words(requests[0])
    assert any("How can I help you today?" in str(m["content"]) for m in first["messages"]), first["messages"]
