"""`--log-format json` / `LOVEKEY_LOG_FORMAT=json`: one JSON object per line, redacted like the
text format (the redaction filter runs in front of the JSON formatter, and extra values are
masked too)."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from lovekey.cli import main as cli_main
from lovekey.config import load_settings
from lovekey.logs import configure_logging
from tests.conftest import DatabaseFactory


def main(argv: list[str], *, environ_url: str) -> int:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOVEKEY_DATABASE_URL", environ_url)
        return cli_main(argv)


@pytest.fixture
def json_log() -> io.StringIO:
    configure_logging("DEBUG", "json")
    buffer = io.StringIO()
    for handler in logging.getLogger().handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
    return buffer  # conftest's autouse fixture restores the root logger


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]


def test_each_line_is_one_json_object_with_extra_key_values(json_log: io.StringIO) -> None:
    logging.getLogger("lovekey.test").info("sweep done in %.1fs", 0.25, extra={"meters": 40, "shard": "0/1"})
    (entry,) = lines(json_log)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "lovekey.test"
    assert entry["message"] == "sweep done in 0.2s"
    assert (entry["meters"], entry["shard"]) == (40, "0/1")
    assert str(entry["time"]).endswith("+00:00")


def test_json_lines_are_redacted_message_extras_and_tracebacks(json_log: io.StringIO) -> None:
    log = logging.getLogger("apprise")  # a library's logger, not ours
    log.debug("sending to +8613800000002 via https://u:hunter2@sms.example/send")
    log.info("queued", extra={"to": "13800000003", "url": "mqtt://gw:s3cret@broker:1883"})
    try:
        raise RuntimeError("cannot reach postgresql://lk:pgsecret@db/lovekey for 13800000004")
    except RuntimeError:
        logging.getLogger("lovekey.test").exception("failed")
    text = json_log.getvalue()
    entries = lines(json_log)
    assert len(entries) == 3
    for secret in ("13800000002", "13800000003", "13800000004", "hunter2", "s3cret", "pgsecret"):
        assert secret not in text
    assert "RuntimeError" in str(entries[2]["exc_info"])


def test_the_setting_and_the_flag_choose_json(
    postgres_factory: DatabaseFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_settings(environ={"LOVEKEY_LOG_FORMAT": "json"}).log_format == "json"
    assert load_settings(environ={}).log_format == "text"
    url = postgres_factory.create("logjson", migrated=False)
    assert main(["--log-format", "json", "--log-level", "DEBUG", "migrate"], environ_url=url) == 0
    err = capsys.readouterr().err
    entries = [orjson.loads(line) for line in err.splitlines()]
    assert entries
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
