"""The ``activecall`` command: configuration checks, the worker registry, and ``up``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from activecall.config import ConfigError, config_path_from_env, load_config, masked, to_toml


def _load(path: str | None):  # type: ignore[no-untyped-def]
    try:
        return load_config(path or config_path_from_env())
    except ConfigError as exc:
        print(f"invalid configuration\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"# effective configuration of {args.file} (environment applied, secrets masked)")
    print(to_toml(masked(config)), end="")
    return 0


def cmd_check_playbook(args: argparse.Namespace) -> int:
    from activecall.playbook import check_playbook_main

    return check_playbook_main(args.files)


def cmd_workers(args: argparse.Namespace) -> int:
    from activecall.bus import Keys, connect_redis
    from activecall.registry import ROLES, list_workers

    config = _load(args.config)

    async def main() -> list[dict[str, object]]:
        redis = connect_redis(config.redis.url)
        try:
            keys = Keys(config.redis.prefix)
            rows = []
            for role in ROLES:
                for w in await list_workers(
                    redis, keys, role, config.redis.heartbeat_ttl, include_dead=args.all
                ):
                    age = time.time() - w.ts
                    rows.append(
                        {
                            "role": w.role,
                            "id": w.id,
                            "live": age <= config.redis.heartbeat_ttl,
                            "age_s": round(age, 1),
                            "load": w.load,
                            "capacity": w.capacity,
                            "draining": w.draining,
                            "address": w.address,
                            "metrics": w.metrics_target,
                            "pid": w.pid,
                        }
                    )
            return rows
        finally:
            await redis.aclose()

    rows = asyncio.run(main())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ["role", "id", "live", "age_s", "load", "capacity", "draining", "address", "metrics"]
    table = [columns] + [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    live = sum(1 for r in rows if r["live"])
    print(f"{live} live worker(s)")
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when this container's service answers /healthz (its port is in $ACTIVECALL_STATUS_FILE)."""
    import os
    import urllib.request

    from activecall.service import STATUS_FILE_ENV

    port = args.port
    if port is None:
        try:
            port = int(Path(os.environ[STATUS_FILE_ENV]).read_text())
        except (KeyError, OSError, ValueError) as exc:
            print(f"no status port: {exc}", file=sys.stderr)
            return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


def cmd_up(args: argparse.Namespace) -> int:
    from activecall.launcher import Launcher

    config_path = args.config or config_path_from_env()
    config = _load(config_path)
    launcher = Launcher(config, config_path, media_workers=args.media_workers, wait_s=args.wait)
    return launcher.run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="activecall", description="active-call: voice-AI telephony platform"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a config file and print it with secrets masked")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("check-playbook", help="validate playbook files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_check_playbook)

    p = sub.add_parser("workers", help="list the worker registry (live heartbeats)")
    p.add_argument("--config", "-c")
    p.add_argument("--all", action="store_true", help="include workers whose heartbeat stopped")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workers)

    p = sub.add_parser("healthcheck", help="exit 0 when the local service answers /healthz")
    p.add_argument("--port", type=int, help="default: the port in $ACTIVECALL_STATUS_FILE")
    p.set_defaults(func=cmd_healthcheck)

    p = sub.add_parser("up", help="start Redis (if unreachable) and all six services on this machine")
    p.add_argument("--config", "-c")
    p.add_argument("--media-workers", type=int, default=1)
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for every heartbeat")
    p.set_defaults(func=cmd_up)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))
