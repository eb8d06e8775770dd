"""Helpers shared by the tests that use the session's stack."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from blocks.clickhouse import ClickHouseSink, ClickHouseWriter
from core.settings import DEFAULT_SINK_BLOCK
from stack.simulator.spec import load_spec
from stack.state import StackState


def stack_clickhouse() -> ClickHouseWriter:
    """A connection to the stack's ClickHouse, through the block every flow uses."""
    return ClickHouseSink.load(DEFAULT_SINK_BLOCK).connect()


def recorder_port(stack: StackState, name: str) -> int:
    """The port of the stack's simulated recorder `name`."""
    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    return next(r.port for r in spec.recorders if r.name == name)


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, queue.Queue[dict]]]:
    """A webhook endpoint on loopback that keeps every JSON body posted to it: (its URL, the bodies)."""
    from stack.ports import HOST, free_port

    got: queue.Queue[dict] = queue.Queue()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            got.put(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

    server = ThreadingHTTPServer((HOST, free_port()), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def next_message_about(got: queue.Queue[dict], needle: str, timeout_s: float = 180) -> dict:
    """The first message whose subject mentions `needle` (others, e.g. from other runs, are skipped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = got.get(timeout=max(deadline - time.monotonic(), 0.1))
        if needle in message.get("subject", ""):
            return message
