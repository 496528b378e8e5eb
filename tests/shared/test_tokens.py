"""Protocol tokens from a pool of OS random bytes: distinct, uniform, and never shared with a child."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from activecall import tokens
from activecall.tokens import RandomPool


def test_tokens_have_their_length_and_never_repeat_across_refills() -> None:
    drawn = [tokens.token_hex(8) for _ in range(5000)]  # 40 KB: ten refills of the pool
    assert all(len(token) == 16 and int(token, 16) >= 0 for token in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_pool_hands_out_each_byte_once_and_refills_for_a_large_request() -> None:
    pool = RandomPool(size=64)
    first, second = pool.take(40), pool.take(40)  # the second does not fit: a new draw
    assert len(first) == len(second) == 40 and first != second
    assert len(pool.take(100)) == 100  # larger than the pool


def test_randbelow_stays_in_range_and_covers_it_evenly() -> None:
    counts = Counter(tokens.randbelow(6) for _ in range(60_000))
    assert set(counts) == set(range(6))
    assert all(9_000 < count < 11_000 for count in counts.values())  # 10,000 expected, sd ~91
    assert {tokens.randbelow(1) for _ in range(100)} == {0}
    with pytest.raises(ValueError):
        tokens.randbelow(0)


def test_a_forked_child_does_not_reuse_the_parents_bytes() -> None:
    tokens.token_hex(1)  # the pool holds unused bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next token and leave at once
        os.write(write, tokens.token_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != tokens.token_hex(16)
