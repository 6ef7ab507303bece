"""Alerts: escalation from the love-key neighbour to staff until a person answers.

The store API (interface 4) is re-exported here; the worker, the web routes, the chains and
the channels live in their own modules and are imported where they are used.
"""

from lovekey.alerts.store import (
    AlertCandidate,
    RaiseResult,
    acknowledge,
    clear_alerts,
    list_alerts,
    raise_alerts,
    resolve,
)

__all__ = [
    "AlertCandidate",
    "RaiseResult",
    "acknowledge",
    "clear_alerts",
    "list_alerts",
    "raise_alerts",
    "resolve",
]
