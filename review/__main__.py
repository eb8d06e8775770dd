"""`python -m review --host 127.0.0.1 --port 8600`: the review app under uvicorn.

The password is read at start from `$NVRFLOW_REVIEW_PASSWORD`, or else from the Prefect Secret
block named by `--password-block`; it is never printed. The ClickHouse sink and the video store
are the saved blocks named by `--sink-block` and `--store-block` (the stack's by default), loaded
through the Prefect API of the environment (`PREFECT_API_URL`).
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import SecretStr

PASSWORD_ENV = "NVRFLOW_REVIEW_PASSWORD"


def read_password(block_name: str | None) -> SecretStr | None:
    from_env = os.environ.get(PASSWORD_ENV, "")
    if from_env:
        return SecretStr(from_env)
    if block_name:
        from prefect.blocks.system import Secret

        from blocks.loading import load_block

        value = load_block(Secret, block_name).get()
        return SecretStr(str(value)) if value else None
    return None


def prefect_ui_url() -> str | None:
    from prefect.settings import PREFECT_UI_URL

    return PREFECT_UI_URL.value()


def main(argv: list[str] | None = None) -> int:
    from core.settings import DEFAULT_SINK_BLOCK, DEFAULT_VIDEO_STORE_BLOCK

    parser = argparse.ArgumentParser(prog="python -m review", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--sink-block", default=DEFAULT_SINK_BLOCK, help="ClickHouseSink block name")
    parser.add_argument("--store-block", default=DEFAULT_VIDEO_STORE_BLOCK, help="video store block name")
    parser.add_argument("--password-block", help=f"Prefect Secret block with the password (when ${PASSWORD_ENV} is unset)")
    parser.add_argument("--secure-cookies", action="store_true", help="served over HTTPS (behind a proxy)")
    args = parser.parse_args(argv)

    password = read_password(args.password_block)
    if password is None:
        print(f"no password: set ${PASSWORD_ENV} or give --password-block", file=sys.stderr)
        return 2

    import uvicorn

    from blocks.clickhouse import ClickHouseSink
    from blocks.loading import load_block
    from blocks.video_store import load_video_store
    from review.app import ReviewSettings, create_app

    settings = ReviewSettings(
        sink=load_block(ClickHouseSink, args.sink_block),
        store=load_video_store(args.store_block),
        password=password,
        ui_url=prefect_ui_url(),
        secure_cookies=args.secure_cookies,
    )
    # uvicorn's access log holds paths and query strings only: no password travels in either.
    uvicorn.run(create_app(settings), host=args.host, port=args.port, proxy_headers=True, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
