"""Random tokens for protocol identifiers: SIP tags, branches and Call-IDs, bus reply keys.

The bytes come from the operating system's generator, as ``secrets`` takes them, but 4 KiB at a time:
a call needs about ten tokens, and on a virtual machine each ``getrandom`` system call cost more than
the token built from it. A child process after ``fork`` starts with an empty pool, so parent and
child never hand out the same bytes. RFC 3261 section 19.3 asks for cryptographically random tags and
Call-IDs; these are (the pool only batches the reads). Key material is not drawn from here.
"""

from __future__ import annotations

import os
from typing import Final

POOL_BYTES: Final = 4096


class RandomPool:
    def __init__(self, size: int = POOL_BYTES) -> None:
        self.size = size
        self._data = b""
        self._position = 0

    def reset(self) -> None:
        self._data = b""
        self._position = 0

    def take(self, count: int) -> bytes:
        """``count`` bytes never handed out before."""
        start = self._position
        if start + count > len(self._data):
            self._data = os.urandom(max(self.size, count))
            start = 0
        self._position = start + count
        return self._data[start : start + count]


_POOL = RandomPool()
os.register_at_fork(after_in_child=_POOL.reset)


def token_hex(nbytes: int) -> str:
    """``2 * nbytes`` random hex digits."""
    return _POOL.take(nbytes).hex()


def randbelow(limit: int) -> int:
    """A random integer in ``[0, limit)``, uniform (rejection sampling over whole bytes)."""
    if limit <= 0:
        raise ValueError("randbelow needs a positive limit")
    bits = (limit - 1).bit_length()
    size = (bits + 7) // 8
    mask = (1 << bits) - 1
    while True:
        value = int.from_bytes(_POOL.take(size), "big") & mask
        if value < limit:
            return value
