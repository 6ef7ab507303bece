-- Alert records and the audit log are append-only for the programs that write them; the one
-- exception is the purge of records past their retention (`alerts.records_keep_days`,
-- `web.audit_keep_days`), which says so for its own transaction with
-- SET LOCAL lovekey.purging = 'on'. Anything else that deletes or updates is still refused.

CREATE OR REPLACE FUNCTION alert_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('lovekey.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'alert_history is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('lovekey.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

-- the purge finds resolved alerts by age
CREATE INDEX alert_resolved_at_idx ON alert (resolved_at) WHERE status = 'resolved';
CREATE INDEX alert_outbox_digest_created_idx ON alert_outbox (created_at) WHERE alert_id IS NULL;
