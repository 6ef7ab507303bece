-- The check-in stage (issue #14): before a welfare alert wakes the neighbour, the resident is
-- asked on their own phone ("press 1 / reply 1 if you are fine"). Owned by the `alerts`
-- package (alerts/escalation_pass.py, alerts/check_in.py); the detectors write `alert.tier`
-- and read `check_in_answer`.

-- Which tier of the welfare rules raised the alert. 'check_in': only the sensitive tier fired,
-- so only the resident is asked; 'neighbour': the neighbour tier fired (as before this
-- migration), so the chain goes to the love-key holder without asking the resident first.
-- A detector raises an open 'check_in' alert to 'neighbour' (never down); the escalation then
-- goes past the resident stage at once unless the resident has answered "fine".
ALTER TABLE alert ADD COLUMN tier text NOT NULL DEFAULT 'neighbour'
    CHECK (tier IN ('check_in', 'neighbour'));
-- How far the escalation got, for people reading the alert: 'check_in' while only the
-- resident has been asked, then the first role of the last chain step reached
-- ('love_key_holder', 'family', ...). NULL: nobody asked or told yet.
ALTER TABLE alert ADD COLUMN stage text CHECK (stage ~ '^[a-z][a-z_]*$');

-- Per community: is the check-in stage used at all (NULL: the `alerts.check_in_enabled`
-- setting), and the local night hours when it is never used (NULL: the
-- `alerts.check_in_quiet_start`/`_end` settings). The neighbour tier runs at any hour.
ALTER TABLE community ADD COLUMN check_in_enabled boolean;
ALTER TABLE community ADD COLUMN check_in_quiet_start time;
ALTER TABLE community ADD COLUMN check_in_quiet_end time;
ALTER TABLE community ADD CONSTRAINT community_check_in_quiet_pair
    CHECK ((check_in_quiet_start IS NULL) = (check_in_quiet_end IS NULL));

-- One row per check-in: the resident asked about one alert, and how they answered. The
-- detectors learn from it (a resident who answers "fine" after a given dry stretch in a given
-- part of the day moves their own threshold there) and read 'unreachable' as "this resident
-- cannot be asked: use the neighbour tier's timing". No foreign key to the registry, as for
-- `alert`: the record outlives a resident removed from the registry.
--   answer       NULL while the stage runs; 'fine' and 'need_help' are the resident's own
--                answers (SMS reply, voice key, acknowledgement page); 'none': no answer by
--                the end of the stage; 'unreachable': no usable phone, or every attempt to
--                reach it failed
--   dry_minutes  minutes from the alert's `since` (the start of the dry stretch) to asked_at
--   answered_at  when the answer (or its absence) was settled
--   part_of_day  local time of asked_at: night 00-06, morning 06-12, afternoon 12-18,
--                evening 18-24
CREATE TABLE check_in_answer (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id     bigint NOT NULL UNIQUE REFERENCES alert (id),
    resident_id  text NOT NULL,
    kind         text NOT NULL,
    asked_at     timestamptz NOT NULL,
    answered_at  timestamptz,
    answer       text CHECK (answer IN ('fine', 'need_help', 'none', 'unreachable')),
    channel      text,                      -- how the answer came: 'sms', 'voice', 'link', ...
    dry_minutes  integer NOT NULL CHECK (dry_minutes >= 0),
    part_of_day  text NOT NULL CHECK (part_of_day IN ('night', 'morning', 'afternoon', 'evening')),
    CHECK ((answered_at IS NULL) = (answer IS NULL))
);
CREATE INDEX check_in_answer_resident_idx ON check_in_answer (resident_id, asked_at);
