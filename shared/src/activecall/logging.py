"""Structured log lines: one JSON object per line on stderr.

Fields: ``ts``, ``level``, ``service``, ``worker``, ``logger``, ``msg`` and whatever the call site
passes in ``extra``. Values that look like secrets (passwords, tokens, authorization headers) are
masked here, so no call site can leak them by accident.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

# color_message: uvicorn's copy of the message with terminal colours.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
_SECRET_WORDS = ("password", "token", "authorization", "secret", "api_key")
MASK = "********"


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, worker: str) -> None:
        super().__init__()
        self.service = service
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "worker": self.worker,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            line[key] = MASK if _is_secret(key) and value else value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(service: str, worker: str = "", level: str | None = None) -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("ACTIVECALL_LOG_LEVEL", "INFO")).upper())
