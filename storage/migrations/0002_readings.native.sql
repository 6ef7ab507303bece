-- Readings, natively range-partitioned by time. Partitions are created ahead of time by the
-- maintenance job (storage.maintenance), and retention drops whole partitions.
-- Columns are ordered widest first so a row packs without alignment padding.

CREATE TABLE water_reading (
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),   -- lets detectors fetch only what is new
    total_l      double precision NOT NULL,            -- cumulative litres as the meter reports
    device_key   integer NOT NULL,                     -- device.key
    flow_lpm     real,
    battery_v    real,
    PRIMARY KEY (device_key, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX water_reading_received_idx ON water_reading USING brin (received_at);

CREATE TABLE sensor_reading (
    ts             timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    device_key     integer NOT NULL,
    gas_lel_pct    real,
    smoke          real,            -- obscuration or detector level, device-specific scale
    temperature_c  real,
    battery_v      real,
    PRIMARY KEY (device_key, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX sensor_reading_received_idx ON sensor_reading USING brin (received_at);
