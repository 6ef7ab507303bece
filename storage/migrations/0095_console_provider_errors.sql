-- The console's overview lists the provider errors an operator must fix (an unapproved
-- template or signature, a missing template id: `alerts.dispatch` writes them to the alert's
-- history as `provider_error`) from the last day, on every queue page load. Owned by the
-- `web` package (web/queries.py `operator_errors`): without this index that read scans the
-- whole history.
CREATE INDEX alert_history_provider_error_idx ON alert_history (at) WHERE event = 'provider_error';
