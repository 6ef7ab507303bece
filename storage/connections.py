"""Opening connections, with failures turned into `StorageError`."""

from __future__ import annotations

import psycopg

from lovekey.errors import StorageError
from lovekey.redact import redact_url

APPLICATION_NAME = "lovekey"


def connect(url: str, *, autocommit: bool = False, application: str = APPLICATION_NAME) -> psycopg.Connection:
    """A synchronous connection; use it in `with`."""
    try:
        return psycopg.connect(url, autocommit=autocommit, application_name=application)
    except psycopg.OperationalError as exc:
        raise StorageError(f"cannot connect to {redact_url(url)}: {exc}") from exc


async def connect_async(
    url: str, *, autocommit: bool = False, application: str = APPLICATION_NAME
) -> psycopg.AsyncConnection:
    """An asyncio connection; use it in `async with`."""
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, application_name=application)
    except psycopg.OperationalError as exc:
        raise StorageError(f"cannot connect to {redact_url(url)}: {exc}") from exc
