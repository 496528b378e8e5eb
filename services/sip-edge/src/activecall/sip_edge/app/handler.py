"""Who answers an inbound call: playbook rules, or a webhook (the ``[handler]`` section).

Playbook rules match ``caller`` and ``callee`` with regular expressions (``re.search``, so anchor them
with ``^``/``$`` for whole numbers); the first rule whose patterns both match names the playbook,
else ``default``. A webhook receives the call as JSON and answers with the playbook and variables::

    {"playbook": "sales.md", "variables": {"customer": "Ann"}}

or refuses the call with a SIP status::

    {"reject": 486}            {"reject": true, "code": 603, "reason": "Decline"}

A timeout, a transport error, a non-2xx status or an unreadable answer falls back to ``fallback``
(a playbook) or, when that is empty, refuses the call with ``fallback_reject_code``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from activecall.config import Handler
from activecall.sip_edge import metrics

log = logging.getLogger("activecall.sip_edge.app.handler")

MIN_REJECT_CODE = 300
MAX_REJECT_CODE = 699
DEFAULT_REJECT_CODE = 603


@dataclass(frozen=True)
class CallInfo:
    """What the handler knows of an inbound call (also the webhook's JSON body)."""

    call_id: str
    caller: str
    callee: str
    from_uri: str
    to_uri: str
    request_uri: str
    source: str
    transport: str
    sip_call_id: str
    headers: dict[str, str] = field(default_factory=dict)
    direction: str = "inbound"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """The handler's answer: a playbook with variables, or a rejection (``reject_code`` >= 300)."""

    playbook: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    reject_code: int = 0
    reject_reason: str = ""
    source: str = ""

    @property
    def accepted(self) -> bool:
        return self.reject_code == 0


class HandlerError(ValueError):
    """A webhook answer that cannot be understood."""


class PlaybookHandler:
    """``type = "playbook"``: regex rules on caller and callee, else the default playbook."""

    def __init__(self, config: Handler) -> None:
        self.default = config.default
        self.rules = [
            (
                re.compile(rule.caller) if rule.caller else None,
                re.compile(rule.callee) if rule.callee else None,
                rule,
            )
            for rule in config.rules
        ]

    async def decide(self, call: CallInfo) -> Decision:
        for caller, callee, rule in self.rules:
            if (caller is None or caller.search(call.caller)) and (
                callee is None or callee.search(call.callee)
            ):
                metrics.child(metrics.HANDLER_DECISIONS, "playbook", "rule").inc()
                return Decision(playbook=rule.playbook, source="rule")
        metrics.child(metrics.HANDLER_DECISIONS, "playbook", "default").inc()
        return Decision(playbook=self.default, source="default")


def parse_webhook_answer(data: Any) -> Decision:
    """Read a webhook's JSON answer (see the module doc)."""
    if not isinstance(data, dict):
        raise HandlerError("the answer is not a JSON object")
    reject = data.get("reject")
    if reject not in (None, False):
        code = reject if isinstance(reject, int) and not isinstance(reject, bool) else data.get("code")
        code = (
            code
            if isinstance(code, int) and MIN_REJECT_CODE <= code <= MAX_REJECT_CODE
            else DEFAULT_REJECT_CODE
        )
        reason = data.get("reason")
        return Decision(
            reject_code=code, reject_reason=reason if isinstance(reason, str) else "", source="webhook"
        )
    playbook = data.get("playbook")
    if not isinstance(playbook, str) or not playbook:
        raise HandlerError("the answer names no playbook")
    variables = data.get("variables")
    variables = {} if variables is None else variables
    if not isinstance(variables, dict):
        raise HandlerError("variables is not an object")
    return Decision(
        playbook=playbook, variables={str(k): str(v) for k, v in variables.items()}, source="webhook"
    )


class WebhookHandler:
    """``type = "webhook"``: ask an HTTP endpoint, within ``timeout`` seconds."""

    def __init__(self, config: Handler, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = client or httpx.AsyncClient(timeout=config.timeout)

    async def decide(self, call: CallInfo) -> Decision:
        try:
            decision = parse_webhook_answer(await self._ask(call))
        except (httpx.HTTPError, HandlerError, ValueError) as exc:
            log.warning(
                "webhook failed; using the fallback", extra={"call_id": call.call_id, "error": str(exc)}
            )
            metrics.child(metrics.HANDLER_DECISIONS, "webhook", "fallback").inc()
            return self._fallback()
        outcome = "rejected" if decision.reject_code else "accepted"
        metrics.child(metrics.HANDLER_DECISIONS, "webhook", outcome).inc()
        return decision

    async def _ask(self, call: CallInfo) -> Any:
        config = self.config
        if config.method == "GET":
            params = {k: v for k, v in call.to_json().items() if isinstance(v, str)}
            response = await self.client.get(config.url, params=params, timeout=config.timeout)
        else:
            response = await self.client.request(
                config.method, config.url, json=call.to_json(), timeout=config.timeout
            )
        response.raise_for_status()
        return response.json()

    def _fallback(self) -> Decision:
        if self.config.fallback:
            return Decision(playbook=self.config.fallback, source="fallback")
        return Decision(reject_code=self.config.fallback_reject_code, source="fallback")

    async def close(self) -> None:
        await self.client.aclose()


CallHandler = PlaybookHandler | WebhookHandler


def make_handler(config: Handler) -> CallHandler:
    return WebhookHandler(config) if config.type == "webhook" else PlaybookHandler(config)
