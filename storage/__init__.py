"""The shared database layer: connections, the embedded server, migrations and maintenance.

SQL for a table lives with the package that owns it; this package owns the schema files and
the machinery that applies and maintains them.
"""

from lovekey.storage.connections import connect, connect_async
from lovekey.storage.embedded import database_url
from lovekey.storage.maintenance import MaintenanceReport, run_maintenance
from lovekey.storage.migrate import Layout, MigrateResult, migrate, server_features

__all__ = [
    "Layout",
    "MaintenanceReport",
    "MigrateResult",
    "connect",
    "connect_async",
    "database_url",
    "migrate",
    "run_maintenance",
    "server_features",
]
