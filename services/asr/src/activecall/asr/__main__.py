"""`python -m activecall.asr` and the console script `activecall-asr`."""

from __future__ import annotations

from collections.abc import Sequence

from activecall.asr.service import AsrService
from activecall.service import run_service


def main(argv: Sequence[str] | None = None) -> None:
    run_service("asr", AsrService, argv)


if __name__ == "__main__":
    main()
