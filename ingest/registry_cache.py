"""The ingester's in-memory view of the device registry.

Every message is checked against it (known device, right gateway, right kind) without a
query. The whole registry is reloaded every `registry_refresh_s`; an id the cache does not
know, or knows differently from what a message claims, is looked up again at most once per
`registry_miss_retry_s`, for all such ids of a batch in one query.

Devices of a configured source (`ingest.sources`) are also found by their id at the source:
`external` maps (gateway id, external id in lower case) to the device id.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from lovekey.ingest.batch import DeviceEntry

# A flood of made-up ids must not grow the memory of recent misses without bound.
_MAX_REMEMBERED_MISSES = 100_000


class RegistryCache:
    """Device id -> entry and the set of gateway ids, with the bookkeeping of lookups.

    Times are `time.monotonic()` values passed in by the caller.
    """

    def __init__(self, *, refresh_s: float, miss_retry_s: float) -> None:
        self.refresh_s = refresh_s
        self.miss_retry_s = miss_retry_s
        self.devices: dict[str, DeviceEntry] = {}
        self.gateways: set[str] = set()
        self.external: dict[tuple[str, str], str] = {}
        self.loaded_at: float | None = None
        self._asked_at: dict[str, float] = {}  # "d:" / "g:" + id -> last targeted lookup

    def refresh_due(self, now_mono: float) -> bool:
        return self.loaded_at is None or now_mono - self.loaded_at >= self.refresh_s

    def replace(
        self,
        devices: dict[str, DeviceEntry],
        gateways: set[str],
        now_mono: float,
        external: dict[tuple[str, str], str] | None = None,
    ) -> None:
        self.devices = devices
        self.gateways = gateways
        self.external = external or {}
        self.loaded_at = now_mono
        self._asked_at.clear()

    def stale_ids(
        self,
        claims: Iterable[tuple[str, str | None]],
        now_mono: float,
    ) -> tuple[list[str], list[str]]:
        """Ids worth a lookup among `(gateway_id, device_id or None)` claims of a batch.

        A device is worth one when unknown or registered elsewhere than the claim says; a
        gateway (status messages, `device_id` None) when unknown. Ids looked up less than
        `miss_retry_s` ago are not asked again.
        """
        devices: set[str] = set()
        gateways: set[str] = set()
        for gateway_id, device_id in claims:
            if device_id is None:
                if gateway_id not in self.gateways:
                    gateways.add(gateway_id)
                continue
            entry = self.devices.get(device_id)
            if entry is None or entry.gateway_id != gateway_id:
                devices.add(device_id)
        return (
            [d for d in devices if self._may_ask("d:" + d, now_mono)],
            [g for g in gateways if self._may_ask("g:" + g, now_mono)],
        )

    def stale_external(self, claims: Iterable[tuple[str, str]], now_mono: float) -> list[tuple[str, str]]:
        """(gateway id, external id in lower case) claims worth a lookup: unknown, not asked lately."""
        return [
            claim
            for claim in set(claims)
            if claim not in self.external and self._may_ask(f"x:{claim[0]}/{claim[1]}", now_mono)
        ]

    def merge_external(
        self, asked: list[tuple[str, str]], found: dict[tuple[str, str], str], now_mono: float
    ) -> None:
        """Record the answer of a lookup by external id; its devices come with `merge`."""
        if len(self._asked_at) > _MAX_REMEMBERED_MISSES:
            self._asked_at.clear()
        for claim in asked:
            self._asked_at[f"x:{claim[0]}/{claim[1]}"] = now_mono
        self.external.update(found)

    def _may_ask(self, key: str, now_mono: float) -> bool:
        asked = self._asked_at.get(key)
        return asked is None or now_mono - asked >= self.miss_retry_s

    def merge(
        self,
        asked_devices: list[str],
        found_devices: dict[str, DeviceEntry],
        asked_gateways: list[str],
        found_gateways: set[str],
        now_mono: float,
    ) -> None:
        """Record the answer of a targeted lookup (absent ids are forgotten)."""
        if len(self._asked_at) > _MAX_REMEMBERED_MISSES:
            self._asked_at.clear()
        for device_id in asked_devices:
            self._asked_at["d:" + device_id] = now_mono
            entry = found_devices.get(device_id)
            if entry is None:
                self.devices.pop(device_id, None)
            else:
                self.devices[device_id] = entry
        for gateway_id in asked_gateways:
            self._asked_at["g:" + gateway_id] = now_mono
            if gateway_id in found_gateways:
                self.gateways.add(gateway_id)
            else:
                self.gateways.discard(gateway_id)


_ALL_DEVICES = "SELECT id, key, gateway_id, kind, resident_id, household_id FROM device"
_SOME_DEVICES = "SELECT id, key, gateway_id, kind, resident_id, household_id FROM device WHERE id = ANY(%s)"


def load_registry(conn: psycopg.Connection) -> tuple[dict[str, DeviceEntry], set[str]]:
    """The whole registry as the cache holds it."""
    with conn.cursor() as cur:
        cur.execute(_ALL_DEVICES)
        devices = {row[0]: DeviceEntry(*row[1:]) for row in cur}
        cur.execute("SELECT id FROM gateway")
        gateways = {row[0] for row in cur}
    return devices, gateways


def look_up(
    conn: psycopg.Connection, device_ids: list[str], gateway_ids: list[str]
) -> tuple[dict[str, DeviceEntry], set[str]]:
    """The registry rows for just these ids."""
    devices: dict[str, DeviceEntry] = {}
    gateways: set[str] = set()
    with conn.cursor() as cur:
        if device_ids:
            cur.execute(_SOME_DEVICES, (device_ids,))
            devices = {row[0]: DeviceEntry(*row[1:]) for row in cur}
        if gateway_ids:
            cur.execute("SELECT id FROM gateway WHERE id = ANY(%s)", (gateway_ids,))
            gateways = {row[0] for row in cur}
    return devices, gateways


_ALL_EXTERNAL = "SELECT gateway_id, lower(external_id), id FROM device WHERE external_id IS NOT NULL"
_SOME_EXTERNAL = """
SELECT d.gateway_id, lower(d.external_id), d.id
FROM device AS d
JOIN unnest(%s::text[], %s::text[]) AS c(gateway_id, external_id)
  ON d.gateway_id = c.gateway_id AND lower(d.external_id) = c.external_id
WHERE d.external_id IS NOT NULL
"""


def load_external(conn: psycopg.Connection) -> dict[tuple[str, str], str]:
    """(gateway id, external id in lower case) -> device id, for every device that has one."""
    with conn.cursor() as cur:
        cur.execute(_ALL_EXTERNAL)
        return {(row[0], row[1]): row[2] for row in cur}


def look_up_external(conn: psycopg.Connection, claims: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The device ids of just these (gateway id, external id in lower case) claims."""
    if not claims:
        return {}
    with conn.cursor() as cur:
        cur.execute(_SOME_EXTERNAL, ([g for g, _ in claims], [x for _, x in claims]))
        return {(row[0], row[1]): row[2] for row in cur}


def find_by_external_id(
    conn: psycopg.Connection, external_id: str, gateway_id: str | None = None
) -> list[tuple[str, str]]:
    """(device id, gateway id) of the devices with this external id (any case), one
    gateway's or all; for a platform that names a device by its id alone (the HTTP push
    receivers), where more than one answer means the id is ambiguous."""
    rows = conn.execute(
        "SELECT id, gateway_id FROM device WHERE lower(external_id) = lower(%s)"
        " AND (%s::text IS NULL OR gateway_id = %s) ORDER BY id",
        (external_id, gateway_id, gateway_id),
    ).fetchall()
    return [(row[0], row[1]) for row in rows]
