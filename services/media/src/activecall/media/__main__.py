"""`python -m activecall.media` and the console script `activecall-media`."""

from __future__ import annotations

from collections.abc import Sequence

from activecall.media.service import MediaService
from activecall.service import run_service


def main(argv: Sequence[str] | None = None) -> None:
    run_service("media", MediaService, argv)


if __name__ == "__main__":
    main()
