"""`python -m activecall.api` and the console script `activecall-api`."""

from __future__ import annotations

from activecall.api.service import main

if __name__ == "__main__":
    main()
