"""Settings: read from the environment once, with errors that name what is missing."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from server.domain.errors import ConfigError
from server.record.keys import REQUEST_TTL
from server.settings import ENV_NAMES, Settings, new_webhook_secret


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


def test_bot_apis_of_single_services() -> None:
    dev = {"LONGRUN_ENV": "dev"}
    assert Settings.from_env(dev).bot_api_urls == {"parcel-tracking": "http://127.0.0.1:9998"}
    routed = Settings.from_env({**dev, "BOT_API_URLS": "a=http://10.0.0.5:80/ b=https://bots.example"})
    assert routed.bot_api_urls == {"a": "http://10.0.0.5:80", "b": "https://bots.example"}
    assert Settings.from_env(routed.to_env()).bot_api_urls == routed.bot_api_urls
    everything_at_bot_api_url = Settings.from_env({**dev, "BOT_API_URLS": ""})
    assert everything_at_bot_api_url.bot_api_urls == {}
    assert Settings.from_env(everything_at_bot_api_url.to_env()).bot_api_urls == {}
    with pytest.raises(ConfigError, match="BOT_API_URLS"):
        Settings.from_env({**dev, "BOT_API_URLS": "parcel-tracking"})


def test_every_setting_round_trips_and_otp_limits_come_from_the_environment() -> None:
    s = Settings.from_env({"LONGRUN_ENV": "dev", "OTP_MAX_RESENDS": "5", "OTP_CODE_TTL": "300"})
    assert (s.otp_max_resends, s.otp_code_ttl) == (5, 300)
    defaults = Settings.from_env({"LONGRUN_ENV": "dev"})
    assert (defaults.otp_max_resends, defaults.otp_code_ttl, defaults.request_ttl) == (3, 120, 1800)
    again = Settings.from_env(s.to_env())
    for f in fields(Settings):
        if f.name != "extra":
            assert getattr(again, f.name) == getattr(s, f.name), f.name


def test_the_record_store_uses_the_settings_default_ttl() -> None:
    assert REQUEST_TTL == Settings(secret_key="k", webhook_secrets=("w",)).request_ttl == 1800


def test_readme_names_every_variable() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    assert [name for name in ENV_NAMES if f"`{name}`" not in table] == []
