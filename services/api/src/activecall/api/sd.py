"""Prometheus HTTP service discovery built from the worker registry.

The answer is the ``http_sd_configs`` format: a list of target groups, one per live worker, each
naming its ``host:port`` of ``/metrics`` and labelled with its role and id. Prometheus turns the
``__meta_`` labels into target labels through relabelling; ``--scale media=4`` appears without
editing any file.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from activecall.bus import Keys
from activecall.registry import ROLES, WorkerInfo, list_workers

ROLE_LABEL = "__meta_activecall_role"
WORKER_LABEL = "__meta_activecall_worker"


def target_group(worker: WorkerInfo) -> dict[str, Any]:
    return {
        "targets": [worker.metrics_target],
        "labels": {ROLE_LABEL: worker.role, WORKER_LABEL: worker.id},
    }


async def discovery_targets(redis: aioredis.Redis, keys: Keys, ttl: float) -> list[dict[str, Any]]:
    """Target groups of every live worker of every role, ordered by role then id."""
    groups: list[dict[str, Any]] = []
    for role in ROLES:
        groups.extend(target_group(w) for w in await list_workers(redis, keys, role, ttl))
    return groups
