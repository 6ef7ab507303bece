-- Sign-in throttling (web). One row per key, counting sign-in attempts in a fixed window that
-- starts with the first one: 'addr:203.0.113.7' for a client address (failures under any name)
-- and 'user:wang addr:203.0.113.7' for a name tried from that address. An attempt is claimed
-- with one atomic upsert *before* its password is checked, so parallel attempts each see their
-- own count and none slips past the limit; a successful sign-in hands its claims back.
CREATE TABLE login_throttle (
    key           text PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    attempts      integer NOT NULL CHECK (attempts >= 0)
);
CREATE INDEX login_throttle_window_idx ON login_throttle (window_start);
