"""Metrics of the gateway (prefix ``activecall_api_``); labels are route templates, never call ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "<unmatched>"

REQUESTS = Counter(
    "activecall_api_requests_total",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
ORIGINATES = Counter(
    "activecall_api_originate_requests_total",
    "POST /call requests by result (queued, invalid, no_capacity, error)",
    ["result"],
)
COMMANDS = Counter(
    "activecall_api_commands_total", "Call commands by command and result", ["command", "result"]
)
EVENT_STREAMS = Gauge("activecall_api_event_streams", "Open live event streams", ["kind"])


def route_template(scope: Scope) -> str:
    """The path template the router matched (``/calls/{call_id}``), set in the scope by Starlette."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestMetrics:
    """ASGI middleware counting HTTP responses; pure ASGI, so streaming responses pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            REQUESTS.labels(scope["method"], route_template(scope), str(status[0])).inc()
