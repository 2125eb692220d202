"""HTTP client for the bot API (DESIGN.md, "Bot API").

Maps transport trouble onto two exceptions the jobs act on:
:class:`BotUnavailable` (connection refused, 5xx: worth retrying) and
:class:`BotTimeout` (the bot did not answer before the request's deadline);
an answer that cannot be read raises ``ProtocolError`` (all three: ``BOT_CALL_FAILED``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from server.domain.errors import LongrunError, ProtocolError
from server.domain.protocol import BotAnswer, parse_bot_answer

MAX_ANSWER_BYTES = 1024 * 1024


class BotUnavailable(LongrunError):
    """The bot API could not be reached or answered 5xx; the call may be retried."""


class BotRetryableError(LongrunError):
    """The bot answered ``{"status": "error", "retryable": true}``."""


class BotTimeout(LongrunError):
    """The bot did not answer before the request's deadline."""


#: everything a bot call raises instead of an answer: out of reach, out of time, unreadable
BOT_CALL_FAILED: tuple[type[LongrunError], ...] = (BotUnavailable, BotTimeout, ProtocolError)


class BotClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        max_timeout: float = 180.0,
        routes: Mapping[str, str] | None = None,
    ):
        self.session = session
        self.base_url = base_url.rstrip("/")
        #: BOT_API_URLS: services whose bot API lives elsewhere (a bot in another language)
        self.routes = {slug: url.rstrip("/") for slug, url in (routes or {}).items()}
        #: BOT_API_TIMEOUT: no single call waits longer, whatever the request's deadline
        self.max_timeout = max_timeout

    def url(self, slug: str, action: str) -> str:
        """Where ``/services/{slug}/{action}`` is: the service's own bot API, else BOT_API_URL."""
        return f"{self.routes.get(slug, self.base_url)}/services/{slug}/{action}"

    async def _post(
        self, url: str, body: Mapping[str, Any], *, idempotency_key: str, timeout: float
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        try:
            async with self.session.post(
                url,
                data=orjson.dumps(dict(body)),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(0.1, min(timeout, self.max_timeout))),
            ) as resp:
                if resp.status >= 500:
                    raise BotUnavailable(f"the bot API answered {resp.status}")
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if len(raw) > MAX_ANSWER_BYTES:
                    raise ProtocolError("the bot's answer is larger than 1 MiB")
                if resp.status == 202 and not raw.strip():
                    return 202, None
                try:
                    return resp.status, orjson.loads(raw) if raw.strip() else None
                except orjson.JSONDecodeError:
                    raise ProtocolError("the bot's answer is not JSON") from None
        except TimeoutError:
            raise BotTimeout(f"no answer from {url} within {timeout:.0f} s") from None
        except aiohttp.ClientError as exc:
            raise BotUnavailable(f"cannot reach the bot API: {exc.__class__.__name__}") from None

    async def run(
        self,
        slug: str,
        request_hash: str,
        data: Mapping[str, Any],
        *,
        otp: str | None = None,
        input: Mapping[str, Any] | None = None,
        idempotency_key: str,
        timeout: float,
    ) -> BotAnswer:
        body: dict[str, Any] = {"requestHash": request_hash, "data": dict(data)}
        if otp is not None:
            body["otp"] = otp
        if input is not None:
            body["input"] = {"id": input["id"], "value": input["value"]}
        status, answer = await self._post(self.url(slug, "run"), body, idempotency_key=idempotency_key, timeout=timeout)
        return parse_bot_answer(status, answer)

    async def resend_otp(self, slug: str, request_hash: str, *, idempotency_key: str, timeout: float) -> BotAnswer:
        status, answer = await self._post(
            self.url(slug, "resend-otp"),
            {"requestHash": request_hash},
            idempotency_key=idempotency_key,
            timeout=timeout,
        )
        return parse_bot_answer(status, answer)

    async def cancel(self, slug: str, request_hash: str, *, timeout: float = 10.0) -> None:
        await self._post(
            self.url(slug, "cancel"),
            {"requestHash": request_hash},
            idempotency_key=f"{request_hash}:cancel",
            timeout=timeout,
        )
