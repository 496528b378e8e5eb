"""SIP transaction timers (RFC 3261 section 17 and table 4; RFC 6026 timers L and M).

Every timer derives from the three base intervals T1, T2 and T4 through :func:`timer_values`, so a
test shrinks them all by shrinking T1. A scheduler is anything with asyncio's ``call_later``: the
event loop in production, a manual clock in the state-machine tests.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# RFC 3261 section 17.1.1.1: RTT estimate, largest retransmit interval, longest a message lives.
T1 = 0.5
T2 = 4.0
T4 = 5.0
# Transaction lifetime in units of T1 (timers B, F, H, J on UDP, L, M).
TRANSACTION_T1_MULTIPLE = 64


class TimerName(enum.StrEnum):
    """Timers by their RFC names (RFC 3261 table 4, RFC 6026 section 8.11)."""

    A = "A"  # INVITE request retransmit (unreliable transports)
    B = "B"  # INVITE transaction timeout
    D = "D"  # wait for response retransmits after a non-2xx final
    E = "E"  # non-INVITE request retransmit (unreliable transports)
    F = "F"  # non-INVITE transaction timeout
    G = "G"  # INVITE non-2xx final response retransmit
    H = "H"  # wait for ACK receipt
    I = "I"  # noqa: E741 - the RFC's name; wait for ACK retransmits
    J = "J"  # wait for non-INVITE request retransmits
    K = "K"  # wait for non-INVITE response retransmits
    L = "L"  # wait for accepted INVITE request retransmits (RFC 6026)
    M = "M"  # wait for 2xx retransmits and forked 2xx (RFC 6026)
    TRYING = "trying"  # send 100 Trying when the TU is silent (RFC 3261 section 17.2.1, 200 ms)


@dataclass(frozen=True, slots=True)
class BaseIntervals:
    """T1, T2 and T4 in seconds (RFC 3261 section 17.1.1.1); shrink ``t1`` to speed tests up."""

    t1: float = T1
    t2: float = T2
    t4: float = T4

    @classmethod
    def scaled(cls, t1: float) -> BaseIntervals:
        """Intervals keeping the RFC's ratios to T1 (T2 = 8 T1, T4 = 10 T1)."""
        return cls(t1, t1 * (T2 / T1), t1 * (T4 / T1))


@dataclass(frozen=True, slots=True)
class TimerValues:
    """Initial value of every timer for one transport kind, in seconds."""

    t1: float
    t2: float
    a: float
    b: float
    d: float
    e: float
    f: float
    g: float
    h: float
    i: float
    j: float
    k: float
    l: float  # noqa: E741 - the RFC's name
    m: float
    trying: float

    def next_retransmit(self, interval: float) -> float:
        """Timers A, E and G double, E and G capped at T2 (RFC 3261 sections 17.1.2.2, 17.2.1)."""
        return min(interval * 2, self.t2)


def timer_values(base: BaseIntervals, reliable: bool) -> TimerValues:
    """All timers from T1, T2 and T4 (RFC 3261 table 4, RFC 6026 section 8.11).

    Timer D is 64*T1 on unreliable transports, which is the RFC's "at least 32 s" at the default T1.
    On reliable transports D, I, J and K are zero and A, E, G never fire (no retransmissions).
    """
    lifetime = TRANSACTION_T1_MULTIPLE * base.t1
    return TimerValues(
        t1=base.t1,
        t2=base.t2,
        a=base.t1,
        b=lifetime,
        d=0.0 if reliable else lifetime,
        e=base.t1,
        f=lifetime,
        g=base.t1,
        h=lifetime,
        i=0.0 if reliable else base.t4,
        j=0.0 if reliable else lifetime,
        k=0.0 if reliable else base.t4,
        l=lifetime,
        m=lifetime,
        trying=min(0.2, 0.4 * base.t1),
    )


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What the transaction layer needs of a clock: asyncio's ``loop.call_later``."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable: ...
