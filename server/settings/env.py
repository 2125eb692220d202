"""How a setting travels through the environment: :class:`Env` (a field's variable name,
parser, writer and meaning), :func:`setting` to declare one, and the parsers and writers
the settings share. Parsers name the variable in every error (tests check the wording)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

from server.domain.errors import ConfigError

DEFAULT_WAIT_THRESHOLDS: Mapping[str, float] = {"high": 10.0, "default": 30.0, "low": 120.0}


class Unset:
    """What a parser returns for a blank value: use the default (or the fallback)."""


UNSET = Unset()


@dataclass
class Reading:
    """What a fallback may look at while :meth:`Settings.from_env` reads the environment."""

    dev: bool
    values: dict[str, Any]
    notes: list[str]


@dataclass(frozen=True)
class Env:
    """How one setting travels through the environment."""

    name: str
    #: ``(variable name, raw text) -> value``, or ``UNSET`` for "blank: use the default"
    parse: Callable[[str, str], Any]
    #: value -> text for :meth:`Settings.to_env`; ``None`` leaves the variable out
    unparse: Callable[[Any], str | None]
    doc: str = ""
    #: a default that depends on other settings (or on dev mode), used instead of the field's
    fallback: Callable[[Reading], Any] | None = None


# Parsers: (name, raw) -> value | UNSET. A variable that is not set at all never reaches them.


def as_is(name: str, raw: str) -> Any:
    return raw


def text_or_default(name: str, raw: str) -> Any:
    return raw or UNSET


def url(name: str, raw: str) -> Any:
    return raw.rstrip("/") if raw else UNSET


def upper(name: str, raw: str) -> Any:
    return raw.upper()


def optional(name: str, raw: str) -> Any:
    return raw or None


def number(name: str, raw: str) -> Any:
    if raw.strip() == "":
        return UNSET
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def whole(name: str, raw: str) -> Any:
    value = number(name, raw)
    return value if value is UNSET else int(value)


def at_least_one(name: str, raw: str) -> Any:
    value = whole(name, raw)
    return value if value is UNSET else max(1, value)


def flag(name: str, raw: str) -> Any:
    if raw.strip() == "":
        return UNSET
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def dev_env(name: str, raw: str) -> Any:
    return raw.strip().lower() in {"dev", "development"}


def words(name: str, raw: str) -> Any:
    return tuple(raw.split())


def ints(name: str, raw: str) -> Any:
    if raw.strip() == "":
        return UNSET
    try:
        values = tuple(int(x) for x in raw.replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"{name} must be whole seconds separated by spaces, got {raw!r}") from None
    if any(v < 0 for v in values):
        raise ConfigError(f"{name} must not be negative")
    return values


def rate(name: str, raw: str) -> Any:
    """``burst/seconds``, e.g. ``10/60``: ten at once, refilled over a minute."""
    if raw.strip() == "":
        return UNSET
    burst, _, per = raw.partition("/")
    try:
        value = (int(burst), float(per))
    except ValueError:
        raise ConfigError(f"{name} must look like 10/60 (burst/seconds), got {raw!r}") from None
    if value[0] < 1 or value[1] <= 0:
        raise ConfigError(f"{name} needs a burst of at least 1 over a positive number of seconds")
    return value


def networks(name: str, raw: str) -> Any:
    out = tuple(raw.replace(",", " ").split())
    for item in out:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an address or a CIDR range") from None
    return out


def thresholds(name: str, raw: str) -> Any:
    """``high=10 default=30 low=120``: seconds of queue wait before an alert."""
    out = dict(DEFAULT_WAIT_THRESHOLDS)
    for part in raw.split():
        queue, _, seconds = part.partition("=")
        try:
            out[queue] = float(seconds)
        except ValueError:
            raise ConfigError(f"{name} must look like 'high=10 default=30', got {raw!r}") from None
    return out


def routes(name: str, raw: str) -> Any:
    """``slug=url slug=url``: bot APIs serving some services, instead of BOT_API_URL."""
    out: dict[str, str] = {}
    for part in raw.split():
        slug, _, where = part.partition("=")
        if not slug or not where.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must look like 'parcel-tracking=http://127.0.0.1:9998', got {raw!r}")
        out[slug] = where.rstrip("/")
    return out


def routes_text(value: Mapping[str, str]) -> str:
    return " ".join(f"{slug}={where}" for slug, where in value.items())


def stripped(name: str, raw: str) -> Any:
    return raw.strip() or UNSET


def whsec_list(name: str, raw: str) -> Any:
    hook = raw.split()
    for s in hook:
        check_webhook_secret(s)
    return tuple(hook) or UNSET


def setting(
    env: str,
    default: Any = MISSING,
    *,
    parse: Callable[[str, str], Any] = as_is,
    unparse: Callable[[Any], str | None] = str,
    doc: str = "",
    fallback: Callable[[Reading], Any] | None = None,
    default_factory: Callable[[], Any] | Any = MISSING,
) -> Any:
    """A :class:`Settings` field read from (and written back to) the variable ``env``."""
    meta = {"env": Env(env, parse, unparse, doc, fallback)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def short_float(value: float) -> str:
    return f"{value:g}"


def boolean(value: bool) -> str:
    return "1" if value else "0"


def joined(values: tuple[Any, ...]) -> str:
    return " ".join(str(v) for v in values)


def rate_text(value: tuple[int, float]) -> str:
    return "{}/{}".format(*value)


def or_leave_out(value: str | None) -> str | None:
    return value or None


APP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: an application's API key: ``lrk_`` + at least 32 URL-safe characters (``new_app_key`` makes one)
APP_KEY = re.compile(r"lrk_[A-Za-z0-9_-]{32,128}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def app_keys(name: str, raw: str) -> Any:
    """``app:lrk_… app:sha256:<hex> …`` → ``((app, sha256 hex of the key), …)``: several keys per
    app (rotation); a key may be given as its digest, so the environment need not hold it."""
    out: list[tuple[str, str]] = []
    for entry in raw.split():
        app, _, key = entry.partition(":")
        if not APP_NAME.fullmatch(app):
            raise ConfigError(
                f"{name}: {app!r} is not an app name (lower-case letters, digits, _ and -, at most 32); "
                "entries look like shop:lrk_<key>"
            )
        digest = _DIGEST.fullmatch(key)
        if digest is not None:
            out.append((app, digest.group(1)))
        elif APP_KEY.fullmatch(key):
            out.append((app, hashlib.sha256(key.encode()).hexdigest()))
        else:
            raise ConfigError(
                f"{name}: the key of {app!r} must be lrk_ and at least 32 letters, digits, - or _ "
                "(or sha256:<64 hex digits> of such a key)"
            )
    if len({d for _, d in out}) != len(out):
        raise ConfigError(f"{name}: the same key is listed twice")
    return tuple(out)


def app_keys_text(keys: tuple[tuple[str, str], ...]) -> str:
    return " ".join(f"{app}:sha256:{digest}" for app, digest in keys)


def origins(name: str, raw: str) -> Any:
    """Space-separated origins (``scheme://host[:port]``, no path), as browsers send them."""
    out = tuple(raw.split())
    for origin in out:
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin) or origin.endswith("/"):
            raise ConfigError(f"{name}: {origin!r} is not an origin like https://shop.example (no path)")
    return out


def check_webhook_secret(secret: str) -> None:
    if not secret.startswith("whsec_"):
        raise ConfigError("BOT_WEBHOOK_SECRET entries must look like whsec_<base64 key>")
    try:
        key = base64.b64decode(secret[len("whsec_") :] + "==", validate=False)
    except ValueError:
        raise ConfigError("BOT_WEBHOOK_SECRET: the part after whsec_ is not base64") from None
    if len(key) < 16:
        raise ConfigError("BOT_WEBHOOK_SECRET: the key must be at least 16 bytes")
