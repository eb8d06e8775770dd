"""`python -m stack up|down|status`: the embedded stack for demo, development and tests."""

from __future__ import annotations

import argparse
import sys

from stack import supervisor
from stack.state import load_state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            state = supervisor.start()
            print(f"Prefect UI: {state.ui_url}")
            print(f"Review app: {state.review_url}")
        elif args.command == "down":
            supervisor.stop()
        else:
            current = load_state()
            for name, st in supervisor.status().items():
                print(f"{name:20} {st}")
            if current:
                print(f"Prefect UI: {current.ui_url}")
                print(f"Review app: {current.review_url}")
                print(
                    f"ClickHouse: {current.clickhouse_url} (user default; password: clickhouse_password in {current.file})"
                )
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
