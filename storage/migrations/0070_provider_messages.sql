-- Template SMS and voice providers (alerts/providers/): what each provider accepted, what it
-- later reported, and every callback that reached us. Owned by the `alerts` package.

-- One row per notification a provider accepted (a bundle is one message for several outbox
-- rows: one row each, same message id). Written as soon as the provider answers, before the
-- outbox row is marked sent, so a worker killed in between does not send it again.
CREATE TABLE provider_message (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id     bigint NOT NULL REFERENCES alert_outbox (id),
    alert_id      bigint,
    provider      text NOT NULL,                 -- the [alerts.providers.<name>] name
    channel       text NOT NULL,                 -- 'sms@aliyun', 'voice@tencent_voice'
    message_id    text NOT NULL,                 -- BizId, SerialNo, CallId
    reference     text NOT NULL,                 -- ours, echoed back as OutId / SessionContext
    phone         text NOT NULL,                 -- E.164
    accepted_at   timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'accepted'
                  CHECK (status IN ('accepted', 'delivered', 'failed', 'answered', 'unanswered')),
    status_at     timestamptz,
    reason        text,                          -- the provider's status code and text
    key_pressed   text,                          -- a voice call's key (1, 2, ...)
    key_at        timestamptz,
    UNIQUE (provider, message_id, outbox_id)
);
CREATE INDEX provider_message_outbox_idx ON provider_message (outbox_id);
CREATE INDEX provider_message_phone_idx ON provider_message (phone, accepted_at);

-- Every callback (receipt, reply, key press) a provider or a stranger posted: refused ones
-- with their reason, so a forgery attempt is on record; the body is kept truncated.
CREATE TABLE provider_callback (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    provider     text NOT NULL,
    topic        text NOT NULL,
    accepted     boolean NOT NULL,
    reason       text NOT NULL,
    remote       text,
    body         text NOT NULL DEFAULT ''
);
CREATE INDEX provider_callback_received_idx ON provider_callback (received_at);
