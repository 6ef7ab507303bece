-- The console shows the provider errors an operator must fix (an unapproved template or
-- signature, a missing template id: `alerts.dispatch` writes them to the alert's history as
-- `provider_error`): above the queue, those of the last day; on each queued alert, whether
-- it met one. Owned by the `web` package (web/queries.py `operator_errors`, `alert_queue`).
-- Both read only these rare rows, so each gets a small partial index instead of a scan of
-- the whole history (by time) or of every entry of each queued alert (by alert).
CREATE INDEX alert_history_provider_error_idx ON alert_history (at) WHERE event = 'provider_error';
CREATE INDEX alert_history_provider_error_alert_idx ON alert_history (alert_id)
    WHERE event = 'provider_error';
