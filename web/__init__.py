"""The staff web console: alert queue, residents, device health, reports, JSON API.

`create_app(settings, database_url)` builds the ASGI app (pools open in its lifespan);
`lovekey serve` runs it, `lovekey users add` creates staff accounts.
"""

from lovekey.web.app import create_app

__all__ = ["create_app"]
