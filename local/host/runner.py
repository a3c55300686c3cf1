"""The command line: `python -m local.host`, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import azure.functions as func

from local.host.config import DEFAULT_STORAGE_SETTING, load_app, load_host_json
from local.host.queues import DEFAULT_MESSAGE_LEASE
from local.host.server import serve
from shared.settings import load_local_settings

log = logging.getLogger("local.host")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.host", description="Run the function app without Core Tools."
    )
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: Host.LocalHttpPort, else 7071")
    parser.add_argument("--no-triggers", action="store_true", help="serve HTTP functions only")
    parser.add_argument(
        "--settings",
        type=Path,
        help="settings file (default: local.settings.json, else local.settings.sample.json)",
    )
    parser.add_argument("--host-json", type=Path, default=Path("host.json"))
    parser.add_argument(
        "--message-lease",
        type=float,
        default=DEFAULT_MESSAGE_LEASE,
        help="seconds a received queue message stays hidden while its function runs",
    )
    parser.add_argument("--stop-timeout", type=float, default=30.0)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _run(app: func.FunctionApp, args: argparse.Namespace, port: int) -> None:
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting without waiting")
            os._exit(1)
        log.info("stopping (waiting up to %ss for running functions)", args.stop_timeout)
        stop_event.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    await serve(
        app,
        host=args.host,
        port=port,
        stop_event=stop_event,
        storage_connection_string=os.environ.get(DEFAULT_STORAGE_SETTING),
        host_json=load_host_json(args.host_json),
        triggers=not args.no_triggers,
        message_lease=args.message_lease,
        stop_timeout=args.stop_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The storage SDK logs every request at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)
    settings = load_local_settings(args.settings)
    port = args.port or int(settings.get("Host", {}).get("LocalHttpPort", 7071))
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app = load_app(args.app)
    asyncio.run(_run(app, args, port))
    log.info("stopped")
    return 0
