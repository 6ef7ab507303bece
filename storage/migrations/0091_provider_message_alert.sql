-- provider_message.alert_id names the alert a provider's message was about: a foreign key, so
-- the purge of alert records (alerts/records.py) finds it like every other dependent row.
ALTER TABLE provider_message
    ADD CONSTRAINT provider_message_alert_fk FOREIGN KEY (alert_id) REFERENCES alert (id);
