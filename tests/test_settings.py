"""Settings: defaults, TOML file, environment overrides, validation and redaction."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from lovekey.config import Settings, load_settings
from lovekey.errors import SettingsError
from lovekey.redact import redact_phone, redact_url


def test_defaults_follow_the_field_rule() -> None:
    settings = load_settings(environ={})
    assert settings.detect.low_usage_min_l == 10.0
    assert settings.detect.low_usage_window_h == 12.0
    assert settings.timezone == "Asia/Shanghai"
    assert settings.mqtt.topic_prefix == "lovekey"
    assert settings.storage.retention_days == 400
    assert settings.database_url is None  # embedded default
    assert settings.mqtt_url is None


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lovekey.toml"
    path.write_text(
        'timezone = "UTC"\n[storage]\nretention_days = 90\n[detect]\nlow_usage_min_l = 5\n',
        encoding="utf-8",
    )
    settings = load_settings(
        path,
        environ={
            "LOVEKEY_DATABASE_URL": "postgresql://lk:secret@db.example:5432/lovekey",
            "LOVEKEY_MQTT_URL": "mqtt://ingest:pw@broker:1883",
            "LOVEKEY_DETECT__LOW_USAGE_MIN_L": "8",
            "LOVEKEY_TEST_DATABASE_URL": "ignored: tooling, not settings",
        },
    )
    assert settings.timezone == "UTC"  # file
    assert settings.storage.retention_days == 90  # file
    assert settings.detect.low_usage_min_l == 8.0  # environment beats file
    assert settings.database_url == "postgresql://lk:secret@db.example:5432/lovekey"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\ntopic_prefix = "dadong"\n', encoding="utf-8")
    assert load_settings(environ={"LOVEKEY_CONFIG": str(path)}).mqtt.topic_prefix == "dadong"


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.timezone = "UTC"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LOVEKEY_TIMEZONE": "Mars/Olympus"}, "unknown time zone"),
        ({"LOVEKEY_DATABASE_URL": "mysql://x"}, "postgresql://"),
        ({"LOVEKEY_MQTT_URL": "http://broker"}, "mqtt://"),
        ({"LOVEKEY_MQTT__TOPIC_PREFIX": "a/#"}, "wildcards"),
        ({"LOVEKEY_STORAGE__RETENTION_DAYS": "zero"}, "retention_days"),
        ({"LOVEKEY_NO_SUCH_THING": "1"}, "no_such_thing"),
    ],
)
def test_bad_values_are_refused_clearly(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("timezone = \n", encoding="utf-8")
    with pytest.raises(SettingsError, match="invalid TOML"):
        load_settings(broken, environ={})


def test_secrets_never_show() -> None:
    settings = load_settings(
        environ={
            "LOVEKEY_DATABASE_URL": "postgresql://lk:hunter2@db/lovekey",
            "LOVEKEY_MQTT_URL": "mqtt://u:hunter3@broker:1883",
        }
    )
    assert "hunter" not in repr(settings)
    assert "hunter" not in str(settings.describe())
    assert settings.describe()["database_url"] == "postgresql://lk:***@db/lovekey"
    assert redact_url("mqtt://u@h:1883") == "mqtt://u@h:1883"
    assert redact_phone("+8613812345678") == "+861********78"


def test_dict_and_list_settings_come_from_the_environment() -> None:
    # a whole dict as JSON ...
    settings = load_settings(
        environ={"LOVEKEY_ALERTS__ROLE_CHANNELS": '{"family": ["sms"], "emergency": []}'}
    )
    assert settings.alerts.role_channels == {"family": ["sms"], "emergency": []}
    # ... or one list inside it, one level further down
    settings = load_settings(environ={"LOVEKEY_ALERTS__ROLE_CHANNELS__GRID_WORKER": '["sms", "push"]'})
    assert settings.alerts.role_channels == {"grid_worker": ["sms", "push"]}


def test_a_file_dict_and_an_environment_dict_merge(tmp_path: Path) -> None:
    path = tmp_path / "lovekey.toml"
    path.write_text('[alerts.role_channels]\nfamily = ["push"]\n', encoding="utf-8")
    settings = load_settings(
        path, environ={"LOVEKEY_ALERTS__ROLE_CHANNELS": '{"emergency": ["sms"]}', "LOVEKEY_WEB__PORT": "9"}
    )
    assert settings.alerts.role_channels == {"family": ["push"], "emergency": ["sms"]}
    assert settings.web.port == 9


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LOVEKEY_ALERTS__ROLE_CHANNELS": '{"family": ["fax"]}'}, r"alerts\.role_channels\.family\.0"),
        ({"LOVEKEY_ALERTS__ROLE_CHANNELS": '{"family": '}, "JSON"),
        ({"LOVEKEY_DETECT__LOW_USAGE_MIN": "5"}, r"detect\.low_usage_min"),
    ],
)
def test_bad_nested_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_keyword_overrides_win_over_the_environment() -> None:
    environ = {"LOVEKEY_DETECT__LOW_USAGE_MIN_L": "8", "LOVEKEY_TIMEZONE": "UTC"}
    settings = load_settings(environ=environ, detect={"low_usage_window_h": 6})
    assert settings.detect.low_usage_min_l == 8.0  # environment, kept beside the override
    assert settings.detect.low_usage_window_h == 6.0
    assert load_settings(environ=environ, timezone="Asia/Urumqi").timezone == "Asia/Urumqi"


def test_the_process_environment_is_read_only_without_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOVEKEY_STORAGE__RETENTION_DAYS", "30")
    assert load_settings().storage.retention_days == 30
    assert load_settings(environ={}).storage.retention_days == 400


def test_with_overrides_merges_sections_and_validates() -> None:
    base = load_settings(environ={"LOVEKEY_ALERTS__PROCESSES": "3"})
    changed = base.with_overrides(alerts={"poll_interval_s": 1.0}, web={"port": 0})
    assert changed.alerts.processes == 3  # the rest of the section is kept
    assert changed.alerts.poll_interval_s == 1.0
    assert changed.web.port == 0
    with pytest.raises(SettingsError, match=r"alerts\.processes"):
        base.with_overrides(alerts={"processes": 0})


def test_console_cookies_are_secure_by_default() -> None:
    assert load_settings(environ={}).web.insecure_cookies is False
    insecure = load_settings(environ={"LOVEKEY_WEB__INSECURE_COOKIES": "true"})
    assert insecure.web.insecure_cookies is True


def test_trusted_proxies_are_parsed_once_as_networks() -> None:
    assert load_settings(environ={}).web.trusted_proxies == ()
    web = load_settings(environ={"LOVEKEY_WEB__TRUSTED_PROXIES": '["127.0.0.1", "10.0.0.0/8"]'}).web
    assert [str(n) for n in web.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8"]
    with pytest.raises(SettingsError, match=r"web\.trusted_proxies"):
        load_settings(environ={"LOVEKEY_WEB__TRUSTED_PROXIES": '["proxy.local"]'})


@pytest.mark.parametrize(
    "environ",
    [
        {"LOVEKEY_MQTT_URL": "http://ingest:hunter2@broker:1883"},
        {"LOVEKEY_DATABASE_URL": "mysql://lk:hunter2@db/lovekey"},
        {"LOVEKEY_ALERTS__INBOUND_SMS_TOKEN": "hunter2"},  # 7 characters, 8 needed
        {"LOVEKEY_ALERTS__ACK_SECRET": "hunter2"},  # too short, and still a secret
    ],
)
def test_errors_never_echo_a_secret(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=environ)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__suppress_context__  # a traceback does not print pydantic's own message


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LOVEKEY_MQTT_URL", "ftp://u:secret@h"), ("LOVEKEY_DATABASE_URL", "mysql://u:secret@h/db")],
)
def test_the_lovekey_command_never_prints_a_wrong_urls_password(
    variable: str, value: str, tmp_path: Path
) -> None:
    """Through the installed command, at DEBUG: nothing on stdout or stderr shows the password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOVEKEY_")}
    env.update({variable: value, "LOVEKEY_DATA_DIR": str(tmp_path / "data")})
    command = Path(sys.executable).with_name("lovekey")
    done = subprocess.run(
        [str(command), "--log-level", "DEBUG", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert variable.removeprefix("LOVEKEY_").lower() in done.stderr  # the setting is named
    assert "secret" not in done.stdout + done.stderr


def test_settings_alone_read_the_environment_as_load_settings_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOVEKEY_ALERTS__ROLE_CHANNELS", '{"family": ["sms"]}')
    assert Settings().alerts.role_channels == {"family": ["sms"]}
    monkeypatch.setenv("LOVEKEY_NO_SUCH_THING", "1")
    with pytest.raises(ValidationError, match="no_such_thing"):
        Settings()


def test_parse_time_reads_a_time_without_offset_in_the_configured_zone() -> None:
    settings = load_settings(environ={}, timezone="Asia/Shanghai")
    naive = settings.parse_time("2026-03-01T08:00:00")
    assert naive.utcoffset() == timedelta(hours=8)
    assert settings.parse_time("2026-03-01T08:00:00+00:00").utcoffset() == timedelta(0)
    with pytest.raises(SettingsError, match="RFC 3339"):
        settings.parse_time("yesterday")
