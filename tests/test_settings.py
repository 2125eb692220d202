"""Settings: read from the environment once, with errors that name what is missing."""

from __future__ import annotations

import pytest

from server.domain.errors import ConfigError
from server.settings import Settings, new_webhook_secret


def test_production_needs_secrets_and_says_which() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env({})
    with pytest.raises(ConfigError, match="BOT_WEBHOOK_SECRET"):
        Settings.from_env({"SECRET_KEY": "s" * 40})
    with pytest.raises(ConfigError, match="whsec_"):
        Settings.from_env({"SECRET_KEY": "s" * 40, "BOT_WEBHOOK_SECRET": "plain"})


def test_dev_mode_generates_secrets_and_says_so() -> None:
    s = Settings.from_env({"LONGRUN_ENV": "dev"})
    assert s.dev_mode and s.secret_key and s.signing_secret.startswith("whsec_")
    assert any("generated" in n for n in s.extra["notes"])


def test_round_trip_through_the_environment() -> None:
    s = Settings(
        secret_key="k" * 40,
        webhook_secrets=(new_webhook_secret(), new_webhook_secret()),
        key_prefix="tx_",
        retry_intervals=(1, 2),
        bot_speed=50.0,
    )
    again = Settings.from_env(s.to_env())
    assert again.webhook_secrets == s.webhook_secrets and again.retry_intervals == (1, 2)
    assert again.key_prefix == "tx_" and again.bot_speed == 50.0


def test_bad_numbers_are_named() -> None:
    with pytest.raises(ConfigError, match="REQUEST_TTL"):
        Settings.from_env({"LONGRUN_ENV": "dev", "REQUEST_TTL": "soon"})
    with pytest.raises(ConfigError, match="RETRY_INTERVALS"):
        Settings.from_env({"LONGRUN_ENV": "dev", "RETRY_INTERVALS": "1 x"})
