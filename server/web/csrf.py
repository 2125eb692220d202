"""CSRF protection for the HTML forms: a synchronizer token bound to the session.

Each browser session gets one random token, kept inside the encrypted session
cookie (so another site can neither read nor forge it). Every page with a
state-changing form puts it in a hidden input; every form post must send it
back, compared in constant time, or it is refused with 403 before anything
else happens. The JSON API does not use tokens: its unsafe calls made with the
session cookie are refused when the browser says they come from another site
(``Origin`` / ``Sec-Fetch-Site``, see ``server.web.edge.refuse_cross_site``).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

from aiohttp import web

from server.domain.errors import Forbidden
from server.web import access

#: the hidden input's name
FIELD = "csrf_token"
_SESSION_KEY = "csrf"


async def token(request: web.Request) -> str:
    """This session's token, made on first use (the session cookie then carries it)."""
    session = await access.session(request)
    value = session.get(_SESSION_KEY)
    if not isinstance(value, str) or not value:
        value = secrets.token_urlsafe(32)
        session[_SESSION_KEY] = value
    return value


async def verify(request: web.Request, form: Mapping[str, object]) -> None:
    """Refuse (403) a form post whose token is missing or is not this session's."""
    sent = form.get(FIELD)
    expected = None
    if request.cookies:
        expected = (await access.session(request)).get(_SESSION_KEY)
    if not (
        isinstance(sent, str)
        and isinstance(expected, str)
        and expected
        and hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise Forbidden("The form's security token is missing or has expired.", code="csrf_failed")
