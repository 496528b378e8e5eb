"""Prometheus metrics shared by every service (prefix ``activecall_``).

Service-specific metrics live in each service's own ``metrics`` module; this one holds what every
process exports: the bus, the worker registry, session claims and Redis reconnects. Label values are
bounded: roles, message types, error kinds; never call ids or phone numbers.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TURN_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


def exposition() -> bytes:
    return generate_latest()


BUS_PUBLISHED = Counter("activecall_bus_messages_published_total", "Messages appended to the bus", ["type"])
BUS_CONSUMED = Counter("activecall_bus_messages_consumed_total", "Messages read from the bus", ["type"])
BUS_SKIPPED = Counter(
    "activecall_bus_messages_skipped_total",
    "Bus entries skipped because their type or version is unknown or they are malformed",
    ["reason"],
)
BUS_LAG = Histogram(
    "activecall_bus_lag_seconds",
    "Time from a message's append to its handling by a consumer",
    ["stream"],
    buckets=LATENCY_BUCKETS,
)
REDIS_RECONNECTS = Counter(
    "activecall_redis_reconnects_total", "Redis operations retried after a connection error"
)

WORKER_LOAD = Gauge(
    "activecall_worker_load", "Units of work this worker holds (legs, sessions, calls)", ["role"]
)
WORKER_CAPACITY = Gauge("activecall_worker_capacity", "Units of work this worker accepts", ["role"])
WORKER_DRAINING = Gauge("activecall_worker_draining", "1 while this worker drains after SIGTERM", ["role"])
HEARTBEATS = Counter(
    "activecall_worker_heartbeats_total", "Heartbeats written to the worker registry", ["role"]
)

SESSIONS_CLAIMED = Counter(
    "activecall_sessions_claimed_total", "Call sessions claimed by this worker", ["role"]
)
SESSIONS_TAKEN_OVER = Counter(
    "activecall_sessions_taken_over_total",
    "Call sessions taken over from a worker that died or handed them over",
    ["role"],
)
SESSIONS_HANDED_OVER = Counter(
    "activecall_sessions_handed_over_total",
    "Call sessions this worker handed to another one when it drained",
    ["role"],
)
SESSIONS_LOST = Counter(
    "activecall_sessions_lost_total", "Call sessions whose lease this worker lost", ["role"]
)
SESSIONS_ACTIVE = Gauge("activecall_sessions_active", "Call sessions held by this worker", ["role"])

REAPER_SWEEPS = Counter(
    "activecall_reaper_sweeps_total",
    "Sweeps of calls:active run by this process (one process a reaper_interval takes the lock)",
)
REAPER_CALLS = Counter(
    "activecall_reaper_calls_total",
    "Calls the reaper ended (ended: edge and media legs gone) or only took out of calls:active"
    " (unlisted: the record was gone or already final)",
    ["action"],
)
REAPER_SESSIONS = Counter(
    "activecall_reaper_sessions_removed_total",
    "Session entries of reaped calls removed because no live worker held their lease",
    ["role"],
)
