-- Compact history of water readings (issue 15): one row per meter and UTC day, older than the
-- hot window. `data` is LoveKey's own column codec (storage/compact.py): timestamps, totals,
-- flow and battery delta-encoded and deflated, so every reading comes back exactly. The same
-- table serves both layouts; on TimescaleDB with compression (community licence) nothing is
-- packed here and the hypertable compresses itself instead (storage/packing.py).

CREATE TABLE water_reading_packed (
    device_key   integer NOT NULL,                -- device.key
    day          date NOT NULL,                   -- UTC day of every reading in `data`
    readings     integer NOT NULL CHECK (readings > 0),
    received_at  timestamptz NOT NULL,            -- newest received_at of the readings packed
    data         bytea NOT NULL,
    PRIMARY KEY (device_key, day)
);
-- already deflated: PostgreSQL should neither try to compress it again nor split it early
ALTER TABLE water_reading_packed ALTER COLUMN data SET STORAGE EXTERNAL;

-- Days the packing job has finished, and when: a finished day is visited again only when a
-- late reading for it arrives after that time.
CREATE TABLE water_pack_day (
    day        date PRIMARY KEY,
    packed_at  timestamptz NOT NULL
);
