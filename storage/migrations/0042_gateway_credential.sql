-- Broker credentials of gateways (issue 16): a gateway connects to the broker with its own
-- id as user name and a password issued by `lovekey gateways credentials issue`. Only the
-- password's hash is kept, in the form Mosquitto's password file takes
-- (`$7$<iterations>$<salt>$<PBKDF2-SHA512>`), so `lovekey broker-config` can write that file
-- from here without anyone holding the password. A revoked credential keeps its row (when,
-- and that it was) but is left out of the broker's files.
CREATE TABLE gateway_credential (
    gateway_id     text PRIMARY KEY REFERENCES gateway (id) ON DELETE CASCADE,
    password_hash  text NOT NULL CHECK (password_hash LIKE '$7$%'),
    issued_at      timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    revoked_at     timestamptz
);
