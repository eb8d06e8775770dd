"""Command line of the model server: checks the port, then imports TensorFlow and serves."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from stack.model_server.batching import DEFAULT_BATCH_TIMEOUT_MS
from stack.ports import HOST

log = logging.getLogger("model_server")


def port_is_free(port: int, host: str = HOST) -> bool:
    """True unless something listens on the port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _model(given: str) -> tuple[str, Path]:
    name, sep, path = given.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--model {given!r}: give NAME=PATH")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.model_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=HOST, help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--model", action="append", default=[], metavar="NAME=PATH",
        help="a model to serve and its folder of numeric version folders (repeat for several)",
    )  # fmt: skip
    parser.add_argument("--model-name", help="with --model-base-path: one model (as --model NAME=PATH)")
    parser.add_argument("--model-base-path", type=Path, help="folder of numeric version folders")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="largest batch one Predict, or one merged model call, may carry",
    )
    parser.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=DEFAULT_BATCH_TIMEOUT_MS,
        help="how long the oldest waiting Predict call waits for others to share its model call",
    )
    parser.add_argument(
        "--stats-file", type=Path, help="JSON file kept up to date with the batching counters"
    )
    parser.add_argument("--workers", type=int, default=4, help="gRPC worker threads")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    # Loading TensorFlow and the model takes seconds: refuse a taken port before that.
    if not port_is_free(args.port, args.host):
        log.error("cannot listen on %s:%d: port in use", args.host, args.port)
        return 1
    models = dict(_model(given) for given in args.model)
    if args.model_name or args.model_base_path:
        if not (args.model_name and args.model_base_path):
            log.error("--model-name and --model-base-path go together")
            return 1
        models[args.model_name] = args.model_base_path
    if not models:
        log.error("no model to serve: give --model NAME=PATH")
        return 1
    for name, path in models.items():
        if not path.is_dir():
            log.error("model %s: base path %s is not a folder", name, path)
            return 1

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from stack.model_server.server import run

    if args.max_batch < 1 or args.batch_timeout_ms < 0:
        log.error("--max-batch must be at least 1 and --batch-timeout-ms not negative")
        return 1
    return run(
        models,
        args.port,
        args.max_batch,
        args.workers,
        stop,
        batch_timeout_ms=args.batch_timeout_ms,
        stats_file=args.stats_file,
        host=args.host,
    )


if __name__ == "__main__":
    sys.exit(main())
