"""`python -m stack.simulator --spec spec.json`: serve every recorder in the spec until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from stack.simulator.server import serve
from stack.simulator.spec import load_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.simulator", description=__doc__)
    parser.add_argument("--spec", required=True, help="simulator spec JSON (see stack/simulator/spec.py)")
    parser.add_argument("--host", help="address to listen on, instead of the spec's (default 127.0.0.1)")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    if args.host:
        spec.host = args.host
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve(spec, stop)
    except OSError as exc:
        print(f"simulator: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
