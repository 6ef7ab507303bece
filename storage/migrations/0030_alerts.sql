-- Alerts: one row per alert, at most one unresolved alert per (kind, subject), and an
-- append-only history of every transition. Owned by the `alerts` package (alerts/store.py).
--
-- subject is the resident_id for resident kinds (low_usage, routine_break, running_tap, leak,
-- smoke, gas, sos), the device_id for meter_silent, the gateway_id for gateway_offline.
-- No foreign keys to the registry on purpose: an alert is a record of what happened and must
-- outlive a device or resident that is later removed from the registry.

CREATE TABLE alert (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind               text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    subject            text NOT NULL,
    resident_id        text,
    device_id          text,
    gateway_id         text,
    status             text NOT NULL DEFAULT 'open'
                       CHECK (status IN ('open', 'notified', 'acknowledged', 'resolved')),
    since              timestamptz NOT NULL,            -- when the condition began
    opened_at          timestamptz NOT NULL,
    last_triggered_at  timestamptz NOT NULL,
    notified_at        timestamptz,                     -- first notification handed to a channel
    acknowledged_at    timestamptz,
    acknowledged_by    text,
    ack_channel        text,                            -- 'link', 'sms', 'cli', 'console', ...
    resolved_at        timestamptz,
    outcome            text CHECK (outcome IN ('resident_ok', 'needed_help', 'hospital', 'away',
                                               'false_data', 'other', 'auto_cleared')),
    outcome_note       text,
    details            jsonb NOT NULL DEFAULT '{}',
    CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL),
    CHECK (status <> 'resolved' OR (resolved_at IS NOT NULL AND outcome IS NOT NULL))
);
-- one unresolved alert per subject and kind; raise_alerts upserts against this index
CREATE UNIQUE INDEX alert_one_unresolved_idx ON alert (kind, subject) WHERE status <> 'resolved';
CREATE INDEX alert_unresolved_idx ON alert (status, opened_at) WHERE status <> 'resolved';
CREATE INDEX alert_resident_idx ON alert (resident_id, opened_at);
CREATE INDEX alert_opened_idx ON alert (opened_at);

CREATE TABLE alert_history (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alert (id),
    at        timestamptz NOT NULL,
    event     text NOT NULL,      -- opened, updated, notified, escalated, acknowledged, resolved, ...
    actor     text,               -- who or what caused it: 'detector', 'worker', a contact name
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_history_alert_idx ON alert_history (alert_id, id);

CREATE FUNCTION alert_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'alert_history is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER alert_history_append_only
    BEFORE UPDATE OR DELETE ON alert_history
    FOR EACH ROW EXECUTE FUNCTION alert_history_append_only();

-- Wake the alert worker as soon as an alert is opened or changes status. Statement-level, and
-- PostgreSQL folds identical notifications of one transaction into one, so a detector sweep
-- that opens 1,000 alerts sends a single notification at its commit.
CREATE FUNCTION alert_notify_worker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lovekey_alerts', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER alert_notify_worker_insert
    AFTER INSERT ON alert
    FOR EACH STATEMENT EXECUTE FUNCTION alert_notify_worker();
CREATE TRIGGER alert_notify_worker_status
    AFTER UPDATE OF status ON alert
    FOR EACH STATEMENT EXECUTE FUNCTION alert_notify_worker();
