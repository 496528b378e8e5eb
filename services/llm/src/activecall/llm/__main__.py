"""`python -m activecall.llm` and the console script `activecall-llm`."""

from __future__ import annotations

from collections.abc import Sequence

from activecall.llm.service import LlmService
from activecall.service import run_service


def main(argv: Sequence[str] | None = None) -> None:
    run_service("llm", LlmService, argv)


if __name__ == "__main__":
    main()
