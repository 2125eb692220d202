"""``python -m server``: the web process (HTTP API, pages, WebSocket hub)."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from server.app import create_app
from server.errors import ConfigError
from server.settings import Settings


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"longrun: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for note in settings.extra.get("notes", ()):
        logging.getLogger("longrun").warning("%s", note)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        reuse_port=True,
        shutdown_timeout=10,
        access_log=None,
        print=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
