"""The ingester's in-memory view of the device registry.

Every message is checked against it (known device, right gateway, right kind) without a
query. The whole registry is reloaded every `registry_refresh_s`; an id the cache does not
know, or knows differently from what a message claims, is looked up again at most once per
`registry_miss_retry_s`, for all such ids of a batch in one query.
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
        self.loaded_at: float | None = None
        self._asked_at: dict[str, float] = {}  # "d:" / "g:" + id -> last targeted lookup

    def refresh_due(self, now_mono: float) -> bool:
        return self.loaded_at is None or now_mono - self.loaded_at >= self.refresh_s

    def replace(self, devices: dict[str, DeviceEntry], gateways: set[str], now_mono: float) -> None:
        self.devices = devices
        self.gateways = gateways
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
