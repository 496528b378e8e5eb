"""Who may use the gateway: bearer tokens (RFC 6750), or loopback clients when none are configured.

Tokens are compared in constant time and never logged. Without tokens the gateway still runs, for
development on one machine, but serves only 127.0.0.0/8 and ::1.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from activecall.api.gateway import GatewayError, gateway_of

bearer_scheme = HTTPBearer(
    auto_error=False, description="One of the tokens of `[api] tokens` in active-call.toml"
)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def bearer_token(connection: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 section 2.1)."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(token: str, tokens: list[str]) -> bool:
    presented = token.encode()
    # Compare with every token, so the time taken says nothing about which one nearly matched.
    matches = [hmac.compare_digest(presented, known.encode()) for known in tokens]
    return any(matches)


def check_client(connection: HTTPConnection) -> None:
    """Raise 401 (no or wrong token) or 403 (not loopback while no token is configured)."""
    tokens = gateway_of(connection).config.api.tokens
    if not tokens:
        client = connection.client.host if connection.client else None
        if not is_loopback(client):
            raise GatewayError(403, "no API tokens are configured: only loopback clients are served")
        return
    token = bearer_token(connection)
    if token is None or not token_matches(token, tokens):
        raise GatewayError(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})


async def require_client(
    request: Request, _credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)
) -> None:
    """FastAPI dependency of every protected route; the bearer scheme shows in OpenAPI."""
    check_client(request)
