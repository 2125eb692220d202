"""The demo bots' process: ``python -m bots.demo`` (the Procfile's ``bots``)."""

from __future__ import annotations

from aiohttp import web

from bots.demo.app import create_bot_app
from server.infra import logs
from server.settings import Settings


def main() -> int:
    settings = Settings.from_env_or_exit("longrun demo bots")
    logs.configure(settings)
    web.run_app(create_bot_app(settings), host=settings.host, port=settings.bot_port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
