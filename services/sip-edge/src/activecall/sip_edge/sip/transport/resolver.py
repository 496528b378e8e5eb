"""Locating SIP servers (RFC 3263 section 4): NAPTR, then SRV, then A/AAAA.

A URI resolves to an ordered list of :class:`~activecall.sip_edge.sip.transport.transport.Target`;
the user agent tries them in turn (the next one after a transport error, a 503, or 4 s without any
answer). An IP literal or an explicit port skips NAPTR and SRV; ``;transport=`` skips NAPTR. Without a
name server list the system resolver answers the address lookups, so ``/etc/hosts`` names work.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.rdatatype

from activecall.sip_edge.sip.syntax.uri import SCHEME_SIPS, SipUri, get_param
from activecall.sip_edge.sip.transport.transport import Target, Transport, TransportError

log = logging.getLogger("activecall.sip_edge.sip.transport.resolver")

# RFC 3263 section 4.1 and the IANA NAPTR service registry.
NAPTR_SERVICES = {"SIP+D2U": Transport.UDP, "SIP+D2T": Transport.TCP, "SIPS+D2T": Transport.TLS}
SRV_PREFIXES = {Transport.UDP: "_sip._udp", Transport.TCP: "_sip._tcp", Transport.TLS: "_sips._tcp"}
CACHE_SECONDS = 30.0


class ResolveError(TransportError):
    """No address for a URI: the request fails as a transport error would (503)."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: list[SrvRecord], rng: random.Random | None = None) -> list[SrvRecord]:
    """RFC 2782 order: by priority, then a weighted random order within each priority."""
    rng = rng or random.Random()
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        pool = [r for r in records if r.priority == priority]
        while pool:
            total = sum(r.weight for r in pool)
            pick = pool[0]
            if total > 0:
                point = rng.uniform(0, total)
                running = 0
                for record in pool:
                    running += record.weight
                    if running >= point:
                        pick = record
                        break
            ordered.append(pick)
            pool.remove(pick)
    return ordered


def ip_literal(host: str) -> str | None:
    """The address of an IPv4 or bracketed IPv6 host, None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class Resolver:
    """RFC 3263 resolution with a short cache. ``nameservers`` (with ``port``) replaces the system's."""

    def __init__(self, nameservers: list[str] | None = None, port: int = 53, timeout: float = 2.0) -> None:
        self._dns = dns.asyncresolver.Resolver(configure=not nameservers)
        if nameservers:
            self._dns.nameservers = list(nameservers)
            self._dns.port = port
        self._dns.lifetime = timeout
        self._custom = bool(nameservers)
        self._cache: dict[tuple[str, str, int | None, str], tuple[float, list[Target]]] = {}

    async def resolve(self, uri: SipUri) -> list[Target]:
        """Targets for ``uri`` in the order to try them (RFC 3263 section 4)."""
        secure = uri.scheme == SCHEME_SIPS
        host = get_param(uri.params, "maddr") or uri.host
        explicit = uri.transport if get_param(uri.params, "transport") or secure else None
        key = (host.lower(), explicit or "", uri.port, uri.scheme)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        targets = await self._resolve(
            host, uri.port, Transport.from_name(explicit) if explicit else None, secure
        )
        if not targets:
            raise ResolveError(f"no address for {host}")
        if ip_literal(host) is None:
            self._cache[key] = (time.monotonic() + CACHE_SECONDS, targets)
        return targets

    async def _resolve(
        self, host: str, port: int | None, transport: Transport | None, secure: bool
    ) -> list[Target]:
        default = Transport.TLS if secure else Transport.UDP
        literal = ip_literal(host)
        if literal is not None:
            kind = transport or default
            return [Target(kind, literal, port or kind.default_port)]
        if port is not None:
            kind = transport or default
            return [Target(kind, address, port, host) for address in await self.addresses(host)]
        if transport is not None:
            found = await self._srv_targets(host, transport)
            return found or await self._default_targets(host, transport)
        found = await self._naptr_targets(host, secure)
        if not found:
            for kind in [Transport.TLS] if secure else [Transport.UDP, Transport.TCP, Transport.TLS]:
                found += await self._srv_targets(host, kind)
        return found or await self._default_targets(host, default)

    async def _default_targets(self, host: str, transport: Transport) -> list[Target]:
        return [Target(transport, a, transport.default_port, host) for a in await self.addresses(host)]

    async def _naptr_targets(self, host: str, secure: bool) -> list[Target]:
        answer = await self._query(host, "NAPTR")
        records = []
        for rdata in answer:
            service = rdata.service.decode("ascii", "replace").upper()
            transport = NAPTR_SERVICES.get(service)
            if transport is None or (secure and transport is not Transport.TLS):
                continue
            if rdata.flags.decode("ascii", "replace").lower() != "s":
                continue
            records.append((rdata.order, rdata.preference, transport, rdata.replacement.to_text(True)))
        targets: list[Target] = []
        for _, _, transport, name in sorted(records, key=lambda r: (r[0], r[1])):
            targets += await self._srv_name_targets(name, transport, host)
        return targets

    async def _srv_targets(self, host: str, transport: Transport) -> list[Target]:
        return await self._srv_name_targets(f"{SRV_PREFIXES[transport]}.{host}", transport, host)

    async def _srv_name_targets(self, name: str, transport: Transport, domain: str) -> list[Target]:
        answer = await self._query(name, "SRV")
        records = [SrvRecord(r.priority, r.weight, r.port, r.target.to_text(True)) for r in answer]
        targets: list[Target] = []
        for record in order_srv(records):
            if record.target in ("", "."):
                continue  # RFC 2782: "." means the service is not offered
            for address in await self.addresses(record.target):
                targets.append(Target(transport, address, record.port, domain))
        return targets

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host``."""
        literal = ip_literal(host)
        if literal is not None:
            return [literal]
        if self._custom:
            found = [r.address for r in await self._query(host, "A")]
            return found + [r.address for r in await self._query(host, "AAAA")]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except OSError:
            return []
        found = []
        for family, _, _, _, sockaddr in sorted(infos, key=lambda info: info[0] != socket.AF_INET):
            address = str(sockaddr[0])
            if address not in found and family in (socket.AF_INET, socket.AF_INET6):
                found.append(address)
        return found

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        try:
            answer = await self._dns.resolve(name, dns.rdatatype.from_text(rdtype), search=False)
        except dns.exception.DNSException as exc:
            log.debug("dns lookup failed", extra={"name": name, "type": rdtype, "error": type(exc).__name__})
            return []
        return list(answer)
