-- Alert delivery: the escalation schedule on each alert, staff contacts that belong to a
-- community rather than a resident, the outbox every notification goes through, and one row
-- per delivery attempt. Owned by the `alerts` package (alerts/outbox.py, alerts/escalate.py).

-- When the escalation job should next look at the alert (NULL: nothing left to do), and when
-- the stand-down after its resolution was queued.
ALTER TABLE alert ADD COLUMN escalation_due_at timestamptz;
ALTER TABLE alert ADD COLUMN stood_down_at timestamptz;
CREATE INDEX alert_escalation_due_idx ON alert (escalation_due_at)
    WHERE escalation_due_at IS NOT NULL;

-- Contacts of a community (or, with community_id NULL, of the whole district) that are not
-- tied to one resident: maintenance staff for device faults, and fallback community staff,
-- grid workers (optionally for one grid) and emergency numbers for residents whose own
-- contact list has nobody in that role. Device faults go to role 'maintenance' only.
CREATE TABLE community_contact (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id  text REFERENCES community (id) ON DELETE CASCADE,
    grid_id       text REFERENCES grid (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('maintenance', 'community_staff', 'grid_worker',
                                                'emergency')),
    position      integer NOT NULL DEFAULT 1 CHECK (position >= 1),
    name          text NOT NULL DEFAULT '',
    phone         text,                                  -- E.164
    push_url      text,                                  -- Apprise URL(s), space separated
    language      text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
    quiet_start   time,                                  -- local time; non-urgent alerts wait
    quiet_end     time,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (grid_id IS NULL OR community_id IS NOT NULL),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);
CREATE INDEX community_contact_community_idx ON community_contact (community_id, role, position);

-- Per-contact delivery preferences on the registry's contacts.
ALTER TABLE contact ADD COLUMN digest_opt_in boolean NOT NULL DEFAULT false;  -- daily all-is-well
ALTER TABLE contact ADD COLUMN quiet_start time;
ALTER TABLE contact ADD COLUMN quiet_end time;
ALTER TABLE contact ADD CONSTRAINT contact_quiet_hours_pair
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL));

-- One row per (alert, recipient, purpose, round): the unit that is delivered exactly once.
-- The recipient is copied in (name, language, addresses) so a registry re-import that
-- replaces contacts cannot change or lose a notification already decided.
CREATE TABLE alert_outbox (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id            bigint REFERENCES alert (id),    -- NULL for a digest
    purpose             text NOT NULL
                        CHECK (purpose IN ('alert', 'stand_down', 'digest')),
    round               integer NOT NULL DEFAULT 0,      -- nth escalation of the alert (0 first)
    step                integer,                         -- chain step, for people reading it
    -- the person, by address: 'tel:+8613800000000', or 'push:<hash of the push URLs>' for
    -- someone without a phone; one neighbour holding keys for several residents is one key
    recipient_key       text NOT NULL,
    contact_ref         text NOT NULL,                   -- 'contact:12' or 'community_contact:3'
    role                text NOT NULL,
    name                text NOT NULL DEFAULT '',
    language            text NOT NULL DEFAULT 'zh',
    phone               text,
    push_urls           text[] NOT NULL DEFAULT '{}',
    channels            text[] NOT NULL,                 -- in order: 'push:0', 'push:1', 'sms'
    urgent              boolean NOT NULL DEFAULT false,  -- ignores quiet hours and rate limits
    state               text NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'sent', 'failed', 'cancelled')),
    channel_index       integer NOT NULL DEFAULT 0,      -- current position in channels
    channel_attempts    integer NOT NULL DEFAULT 0,      -- failed attempts on that channel
    not_before          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL,
    sent_at             timestamptz,
    sent_channel        text,
    bundle_id           bigint,                          -- id of the row whose message carried it
    digest_date         date,
    detail              jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX alert_outbox_once_idx ON alert_outbox (alert_id, purpose, round, recipient_key)
    WHERE alert_id IS NOT NULL;
CREATE UNIQUE INDEX alert_outbox_digest_once_idx ON alert_outbox (contact_ref, digest_date)
    WHERE purpose = 'digest';
CREATE INDEX alert_outbox_due_idx ON alert_outbox (not_before, id) WHERE state = 'pending';
CREATE INDEX alert_outbox_recipient_idx ON alert_outbox (recipient_key, sent_at);
CREATE INDEX alert_outbox_phone_idx ON alert_outbox (phone, sent_at) WHERE phone IS NOT NULL;

-- Every attempt to hand a notification to a channel. 'started' is written and committed
-- before the provider is called, so an attempt cut short by a crash is still on record; the
-- next worker that claims the row marks it 'interrupted' and sends again with the same
-- idempotency key.
CREATE TABLE delivery_attempt (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id    bigint NOT NULL REFERENCES alert_outbox (id),
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    channel      text NOT NULL,
    result       text NOT NULL CHECK (result IN ('started', 'ok', 'failed', 'interrupted')),
    error        text,
    bundle_size  integer NOT NULL DEFAULT 1,
    worker       text NOT NULL DEFAULT ''
);
CREATE INDEX delivery_attempt_outbox_idx ON delivery_attempt (outbox_id, id);
CREATE INDEX delivery_attempt_open_idx ON delivery_attempt (outbox_id) WHERE result = 'started';

-- The acknowledgement-link secret when settings give none: made once, shared by every process.
CREATE TABLE alert_secret (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);

-- Wake dispatchers in every worker process when notifications are queued.
CREATE FUNCTION alert_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lovekey_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER alert_outbox_notify
    AFTER INSERT ON alert_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION alert_outbox_notify();
