"""The ``activecall`` command: configuration checks, the worker registry, ``up``, and the API client
(``call``, ``calls``, ``hangup``, ``tail``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

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
    from activecall.bus import Keys
    from activecall.redis_clients import async_client
    from activecall.registry import ROLES, list_workers

    config = _load(args.config)

    async def main() -> list[dict[str, object]]:
        redis = async_client(config.redis)
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
    from activecall.launcher import Launcher, WorkersError, parse_workers

    try:
        workers = parse_workers(args.workers or "")
    except WorkersError as exc:
        print(f"activecall up: {exc}", file=sys.stderr)
        return 2
    if args.media_workers is not None:
        workers.setdefault("media", args.media_workers)
    config_path = args.config or config_path_from_env()
    config = _load(config_path)
    launcher = Launcher(config, config_path, workers=workers, wait_s=args.wait)
    return launcher.run()


# ---------------------------------------------------------------------------- API client commands

API_TIMEOUT_S = 10.0
TAIL_READ_TIMEOUT_S = 60.0  # the gateway sends a keep-alive every 15 s
TAIL_RECONNECTS = 5
_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}


def api_url(http_addr: str) -> str:
    """The gateway's base URL on this machine, from ``http_addr`` (a wildcard means loopback)."""
    host, _, port = http_addr.rpartition(":")
    return f"http://{_WILDCARD_HOSTS.get(host, host)}:{port}"


def _api_target(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """Base URL and headers: --api and --token, else http_addr and the first of [api] tokens."""
    url, token = args.api, args.token
    if url is None or token is None:
        config = _load(args.config)
        url = url or api_url(config.http_addr)
        if token is None and config.api.tokens:
            token = config.api.tokens[0]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return url.rstrip("/"), headers


def _api_error(response: Any) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # field errors: name each field
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg', '')}" for e in detail
        )
    return f"HTTP {response.status_code}: {detail}"


def _key_values(pairs: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{what} {pair!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _api_request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the gateway; None (after printing why) when it fails."""
    import httpx

    url, headers = _api_target(args)
    try:
        response = httpx.request(method, url + path, headers=headers, timeout=API_TIMEOUT_S, **kwargs)
    except httpx.HTTPError as exc:
        print(f"cannot reach the API at {url}: {exc}", file=sys.stderr)
        return None
    if response.is_error:
        print(_api_error(response), file=sys.stderr)
        return None
    return response


def cmd_call(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"callee": args.uri, "playbook": args.playbook}
    if args.caller:
        body["caller"] = args.caller
    if args.srtp:
        body["sip"] = {"enableSrtp": True}
    if args.header:
        body["headers"] = _key_values(args.header, "--header")
    if args.var:
        body["variables"] = _key_values(args.var, "--var")
    if args.ring_timeout is not None:
        body["ring_timeout"] = args.ring_timeout
    response = _api_request(args, "POST", "/call", json=body)
    if response is None:
        return 1
    created = response.json()
    print(json.dumps(created) if args.json else f"{created['call_id']}  {created['state']}")
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    params = {"state": args.state} if args.state else {}
    response = _api_request(args, "GET", "/calls", params=params)
    if response is None:
        return 1
    calls = response.json()["calls"]
    if args.json:
        print(json.dumps(calls, indent=2))
        return 0
    columns = ["call_id", "state", "direction", "caller", "callee", "playbook", "age_s"]
    now = time.time()
    table = [columns] + [[str(c[k]) for k in columns[:-1]] + [f"{now - c['created']:.0f}"] for c in calls]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print(f"{len(calls)} active call(s)")
    return 0


def cmd_hangup(args: argparse.Namespace) -> int:
    response = _api_request(args, "POST", f"/calls/{args.call_id}/hangup", json={"reason": args.reason})
    if response is None:
        return 1
    print(f"hangup sent to {args.call_id}")
    return 0


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str, str]]:
    """(id, event, data) of each event of a text/event-stream (HTML Living Standard, 9.2.6)."""
    event_id, event = "", ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_id, event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)


def format_event(event: str, data: dict[str, Any]) -> str:
    """One readable line: local time, event type, then the fields."""
    ts = float(data.get("ts", 0.0))
    clock = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
    fields = []
    for key, value in data.items():
        if key in ("call_id", "ts"):
            continue
        if isinstance(value, str) and (not value or any(c.isspace() or c == '"' for c in value)):
            value = json.dumps(value)
        elif not isinstance(value, str):
            value = json.dumps(value, separators=(",", ":"))
        fields.append(f"{key}={value}")
    return f"{clock}  {event:<18} {' '.join(fields)}".rstrip()


def cmd_tail(args: argparse.Namespace) -> int:
    import httpx

    url, headers = _api_target(args)
    last_id = ""
    timeout = httpx.Timeout(API_TIMEOUT_S, read=TAIL_READ_TIMEOUT_S)
    failures = 0  # in a row: a stream that delivered events has proved the gateway works
    while failures <= TAIL_RECONNECTS:
        request_headers = {**headers, "Last-Event-ID": last_id} if last_id else headers
        try:
            with httpx.stream(
                "GET", f"{url}/calls/{args.call_id}/events", headers=request_headers, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    print(_api_error(response), file=sys.stderr)
                    return 1
                for event_id, event, data in parse_sse(response.iter_lines()):
                    last_id, failures = event_id, 0
                    print(format_event(event, json.loads(data)), flush=True)
                    if event == "call.ended":
                        return 0
                return 0  # the gateway ended the stream: the call is over
        except httpx.TransportError as exc:
            failures += 1
            print(f"event stream interrupted ({exc}); resuming", file=sys.stderr)
            time.sleep(1.0)
    print("gave up after repeated interruptions", file=sys.stderr)
    return 1


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
    p.add_argument(
        "--workers",
        metavar="ROLE=N,...",
        help="children per role, e.g. asr=2,llm=2,tts=2,media=2 (one of each by default)",
    )
    p.add_argument("--media-workers", type=int, help="the same as --workers media=N")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for every heartbeat")
    p.set_defaults(func=cmd_up)

    _add_api_commands(sub)
    return parser


def _add_api_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", help="gateway URL (default: from http_addr of the config)")
    p.add_argument("--token", help="bearer token (default: the first of [api] tokens)")
    p.add_argument("--config", "-c")


def _add_api_commands(sub: Any) -> None:
    p = sub.add_parser("call", help="place an outbound call through the HTTP gateway")
    p.add_argument("uri", help="callee: sip:, sips: or tel: URI")
    p.add_argument("--playbook", "-p", required=True, help="playbook file name")
    p.add_argument("--srtp", action="store_true", help="offer SRTP on this call (sip.enableSrtp)")
    p.add_argument("--caller", help="From URI")
    p.add_argument("--header", action="append", default=[], metavar="X-NAME=VALUE")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="playbook variable")
    p.add_argument("--ring-timeout", type=float, help="seconds to ring (1-300)")
    p.add_argument("--json", action="store_true")
    _add_api_options(p)
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("calls", help="list the active calls")
    p.add_argument("--state", help="only calls in this state")
    p.add_argument("--json", action="store_true")
    _add_api_options(p)
    p.set_defaults(func=cmd_calls)

    p = sub.add_parser("hangup", help="hang up a call")
    p.add_argument("call_id")
    p.add_argument("--reason", default="api")
    _add_api_options(p)
    p.set_defaults(func=cmd_hangup)

    p = sub.add_parser("tail", help="follow a call's events until it ends")
    p.add_argument("call_id")
    _add_api_options(p)
    p.set_defaults(func=cmd_tail)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.func(args))
