-- The staff console: staff accounts with their scope, server-side sessions, and an
-- append-only audit log of every action. Owned by the `web` package.
--
-- Scope: a grid_worker sees the households whose grid_id is in grid_ids, community_staff
-- those whose community_id is in community_ids, an admin everything. The ids are not foreign
-- keys on purpose: a registry re-import may rename or drop a grid without locking staff out
-- of the console (they then see nothing until an admin fixes their scope).

CREATE TABLE staff_user (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    display_name   text NOT NULL DEFAULT '',
    role           text NOT NULL CHECK (role IN ('grid_worker', 'community_staff', 'admin')),
    grid_ids       text[] NOT NULL DEFAULT '{}',
    community_ids  text[] NOT NULL DEFAULT '{}',
    password_hash  text NOT NULL,                      -- argon2id, PHC string format
    language       text CHECK (language IN ('zh', 'en')),   -- NULL: follow the browser
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'grid_worker' OR (cardinality(grid_ids) > 0 AND cardinality(community_ids) = 0)),
    CHECK (role <> 'community_staff' OR (cardinality(community_ids) > 0 AND cardinality(grid_ids) = 0)),
    CHECK (role <> 'admin' OR (cardinality(grid_ids) = 0 AND cardinality(community_ids) = 0))
);

-- One row per signed-in browser. The cookie carries a random token; only its SHA-256 is kept,
-- so a copy of this table cannot be replayed. A session ends at expires_at (absolute) or
-- after web.session_idle_s without a request (last_seen_at), whichever comes first.
CREATE TABLE staff_session (
    token_sha256  bytea PRIMARY KEY,
    staff_id      bigint NOT NULL REFERENCES staff_user (id) ON DELETE CASCADE,
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    ip            text,
    user_agent    text NOT NULL DEFAULT ''
);
CREATE INDEX staff_session_staff_idx ON staff_session (staff_id);
CREATE INDEX staff_session_expires_idx ON staff_session (expires_at);

-- Who did what, when, to what, from where. staff_id is NULL for failed logins of unknown
-- names and for the command line; username is copied so the log outlives the account.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    staff_id    bigint,
    username    text NOT NULL DEFAULT '',
    action      text NOT NULL,          -- login, login_failed, logout, acknowledge, resolve, ...
    target      text NOT NULL DEFAULT '',   -- 'alert:12', 'resident:R-0001', 'user:wang', ...
    ip          text,
    user_agent  text NOT NULL DEFAULT '',
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_staff_idx ON audit_log (staff_id, at);
CREATE INDEX audit_log_action_target_idx ON audit_log (action, target, at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
