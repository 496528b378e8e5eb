"""The caller of ``bench/bench_turns.py``: an independent SIP-over-TLS + SRTP phone, its voices, and the
turn-taking figures computed from what it hears. Nothing here imports the project's SIP or media code."""
