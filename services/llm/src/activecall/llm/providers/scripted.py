"""The provider without a language model: the playbook's rules answer (see docs/playbooks.md).

The rules of the current scene are tried in order, then the playbook's; the first that matches the
caller's words says its line and asks for its action (hangup, transfer, goto) as a tool call. When
none matches the playbook's ``fallback`` is said. Key presses never reach a provider's ``generate``:
the conversation looks them up with ``Playbook.on_dtmf(..., scripted=True)``.
"""

from __future__ import annotations

from typing import Any

from activecall.config import LlmSettings
from activecall.llm.providers.base import ModelReply, ModelRequest, Provider, TextSink, ToolCall
from activecall.playbook import ScriptRule


class ScriptedProvider(Provider):
    name = "scripted"
    continues_after_tools = False
    scripted = True

    def __init__(self, settings: LlmSettings | None = None) -> None:
        self.settings = settings

    async def generate(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        playbook = request.playbook
        rule = playbook.match_text(request.utterance, request.scene)
        template = rule.say if rule is not None else playbook.fallback
        if template:
            line = playbook.render(template, request.variables, name=f"{playbook.filename} rule")
            if line.strip():
                await on_text(line)
        calls = [rule_action(rule, f"rule-{rule.line}")] if rule is not None and rule.action else []
        return ModelReply(tool_calls=calls, stop_reason="tool_use" if calls else "end_turn")


def rule_action(rule: ScriptRule, call_id: str) -> ToolCall:
    """A rule's action as the tool call a model would make."""
    arguments: dict[str, Any] = {}
    if rule.action == "transfer" and rule.target:
        arguments["target"] = rule.target
    if rule.action == "goto":
        arguments["scene"] = rule.scene
    name = {"goto": "goto_scene"}.get(rule.action or "", rule.action or "")
    return ToolCall(call_id, name, arguments)
