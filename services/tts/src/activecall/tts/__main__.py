"""`python -m activecall.tts` and the console script `activecall-tts`."""

from __future__ import annotations

from collections.abc import Sequence

from activecall.service import run_service
from activecall.tts.service import TtsService


def main(argv: Sequence[str] | None = None) -> None:
    run_service("tts", TtsService, argv)


if __name__ == "__main__":
    main()
