-- Readings as TimescaleDB hypertables. Chunk size is set from settings after migrating
-- (storage.timescale.configure); retention drops whole chunks with drop_chunks.

CREATE TABLE water_reading (
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    total_l      double precision NOT NULL,
    device_key   integer NOT NULL,
    flow_lpm     real,
    battery_v    real,
    PRIMARY KEY (device_key, ts)
);
SELECT create_hypertable('water_reading', by_range('ts', INTERVAL '7 days'));
CREATE INDEX water_reading_received_idx ON water_reading USING brin (received_at);

CREATE TABLE sensor_reading (
    ts             timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    device_key     integer NOT NULL,
    gas_lel_pct    real,
    smoke          real,
    temperature_c  real,
    battery_v      real,
    PRIMARY KEY (device_key, ts)
);
SELECT create_hypertable('sensor_reading', by_range('ts', INTERVAL '7 days'));
CREATE INDEX sensor_reading_received_idx ON sensor_reading USING brin (received_at);
