"""Command line for the local Kafka broker:
``python -m twin_stream.devtools.broker up|down|status|fetch``.

* ``up [--port N] [--data-dir D] [--version V] [--timeout S]`` starts the broker
  (or finds the running one) and prints its bootstrap address as the last line
  of stdout, so ``BOOTSTRAP=$(python -m twin_stream.devtools.broker up | tail -n1)`` works.
* ``down`` stops it; ``status`` prints it and exits 1 when it is not running or
  not answering; ``fetch [--version V]`` only resolves the jars (CI cache warm-up).

Errors are printed as ``error: ...`` on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from twin_stream.devtools.broker.fetch import DEFAULT_VERSION, BrokerError, fetch
from twin_stream.devtools.broker.node import default_run_dir, down, ping, status, up


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m twin_stream.devtools.broker",
        description="Local single-node KRaft Kafka broker for twin_stream dev/CI/tests.",
        epilog="State lives in $TWIN_BROKER_HOME (default ~/.cache/twin-stream/broker-run).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start (or reuse) the broker; prints the bootstrap address")
    p_up.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: free)")
    p_up.add_argument("--data-dir", type=Path, default=None, help="data dir (default: run dir)")
    p_up.add_argument("--version", default=DEFAULT_VERSION, help="Kafka version")
    p_up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for it")
    sub.add_parser("down", help="stop the broker")
    sub.add_parser("status", help="show the broker; exit 1 if it is not running")
    p_fetch = sub.add_parser("fetch", help="only resolve/cache the broker jars")
    p_fetch.add_argument("--version", default=DEFAULT_VERSION, help="Kafka version")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "up":
            t0 = time.monotonic()
            info = up(args.port, args.data_dir, args.version, args.timeout)
            print(
                f"kafka {info.version} up in {time.monotonic() - t0:.1f}s: pid {info.pid},"
                f" data {info.data_dir}, log {info.log_path}",
                file=sys.stderr,
            )
            print(info.bootstrap, flush=True)
            return 0
        if args.cmd == "down":
            stopped = down()
            print("stopped" if stopped else f"not running (run dir {default_run_dir()})")
            return 0
        if args.cmd == "status":
            found = status()
            if found is None:
                print(f"not running (run dir {default_run_dir()})")
                return 1
            answering = ping(found.bootstrap, timeout_s=5.0)
            print(json.dumps({**found.to_json(), "answering": answering}, indent=2))
            return 0 if answering else 1
        if args.cmd == "fetch":
            t0 = time.monotonic()
            libs = fetch(args.version)
            print(
                f"kafka {args.version} jars ready in {time.monotonic() - t0:.1f}s", file=sys.stderr
            )
            print(libs)
            return 0
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.cmd!r}")  # argparse enforces choices


if __name__ == "__main__":
    sys.exit(main())
