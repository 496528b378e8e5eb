"""The chaos harness of `make chaos` (bench/bench_chaos.py): the system as separate processes, live
calls through each kill, and what is left behind."""
