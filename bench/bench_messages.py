"""Message codec benchmark: the typed decoder and encoder of every bus message, beside bare msgpack.

Reads the golden entries (tests/shared/golden/entries.msgpack: one entry of every message type, as
the encoder of before the typed contract wrote them) and times, per entry, in the same run:

- ``decode``: :func:`activecall.messages.decode`, which checks every field's type;
- ``encode``: ``Message.encode`` of the decoded message;
- ``unpack`` / ``pack``: ``msgpack.unpackb`` to a plain map and ``msgpack.packb`` of that map, which
  check nothing: the floor any decoder of these entries pays.

Each figure is the best of ``--repeats`` runs of ``--number`` calls, in microseconds per call,
averaged over the types. Run with ``make bench-messages``. Run by the interpreter of a checkout from
before the typed contract (``/old/.venv/bin/python bench/bench_messages.py``), it times that
checkout's codec on the same entries.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from pathlib import Path

import msgpack

from activecall.messages import decode

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "shared" / "golden" / "entries.msgpack"


def best_us(run: Callable[[], object], number: int, repeats: int) -> float:
    return min(timeit.repeat(run, number=number, repeat=repeats)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    entries: dict[str, bytes] = msgpack.unpackb(GOLDEN.read_bytes())
    totals = dict.fromkeys(("decode", "encode", "unpack", "pack"), 0.0)
    print(f"{'type':22s} {'decode':>8s} {'encode':>8s} {'unpack':>8s} {'pack':>8s}   (us per call)")
    for type_name, data in sorted(entries.items()):
        message = decode(data)
        plain = msgpack.unpackb(data)
        row = {
            "decode": best_us(lambda data=data: decode(data), args.number, args.repeats),
            "encode": best_us(message.encode, args.number, args.repeats),
            "unpack": best_us(lambda data=data: msgpack.unpackb(data), args.number, args.repeats),
            "pack": best_us(lambda plain=plain: msgpack.packb(plain), args.number, args.repeats),
        }
        for name, value in row.items():
            totals[name] += value
        print(f"{type_name:22s} " + " ".join(f"{row[n]:8.2f}" for n in totals), flush=True)
    mean = {name: total / len(entries) for name, total in totals.items()}
    print(
        f"messages: types={len(entries)} decode_us={mean['decode']:.2f} encode_us={mean['encode']:.2f}"
        f" msgpack_unpack_us={mean['unpack']:.2f} msgpack_pack_us={mean['pack']:.2f}"
    )


if __name__ == "__main__":
    main()
