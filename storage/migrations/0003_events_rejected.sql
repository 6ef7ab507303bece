-- Device events (smoke, gas, sos, away, home, tamper, battery_low) and rejected input.
-- Both are small next to readings; retention deletes old rows from them.

CREATE TABLE device_event (
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    device_key   integer NOT NULL,
    type         text NOT NULL
                 CHECK (type IN ('smoke', 'gas', 'sos', 'away', 'home', 'tamper', 'battery_low')),
    active       boolean NOT NULL,
    value        real,
    PRIMARY KEY (device_key, type, ts)
);
CREATE INDEX device_event_received_idx ON device_event (received_at);
CREATE INDEX device_event_ts_idx ON device_event (ts);

-- Anything the ingester could not accept, kept for an operator with the reason.
CREATE TABLE rejected_input (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    topic          text NOT NULL,
    gateway_id     text,
    device_id      text,
    reason         text NOT NULL,        -- stable code, e.g. 'malformed_json', 'unknown_device'
    detail         text NOT NULL DEFAULT '',
    payload        bytea NOT NULL,       -- cut to ingest.rejected_keep_bytes
    payload_bytes  integer NOT NULL      -- size as received
);
CREATE INDEX rejected_input_received_idx ON rejected_input (received_at);
CREATE INDEX rejected_input_reason_idx ON rejected_input (reason, received_at);
