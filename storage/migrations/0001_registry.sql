-- The device registry: community -> grid -> building -> unit -> household -> resident,
-- devices bound to a household and registered to a gateway, contacts per resident.
-- Text ids are the ids people and gateways use; devices also get a dense integer `key`
-- that readings store (4 bytes a row instead of a text id).

CREATE TABLE community (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    rules       jsonb NOT NULL DEFAULT '{}',   -- detector/escalation overrides for the community
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE grid (
    id            text PRIMARY KEY,
    community_id  text NOT NULL REFERENCES community (id),
    name          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grid_community_idx ON grid (community_id);

CREATE TABLE building (
    id          text PRIMARY KEY,
    grid_id     text NOT NULL REFERENCES grid (id),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE unit (
    id           text PRIMARY KEY,
    building_id  text NOT NULL REFERENCES building (id),
    name         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The place in the hierarchy is kept on the household itself (all optional: the minimal
-- registry form knows none of it), so scoping a grid worker is one indexed column.
CREATE TABLE household (
    id            text PRIMARY KEY,
    community_id  text REFERENCES community (id),
    grid_id       text REFERENCES grid (id),
    building_id   text REFERENCES building (id),
    unit_id       text REFERENCES unit (id),
    address       text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX household_grid_idx ON household (grid_id);
CREATE INDEX household_community_idx ON household (community_id);

CREATE TABLE resident (
    id            text PRIMARY KEY,
    household_id  text NOT NULL REFERENCES household (id),
    name          text NOT NULL DEFAULT '',
    phone         text,
    language      text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'away', 'moved', 'deceased')),
    away_until    timestamptz,
    away_reason   text,
    rules         jsonb NOT NULL DEFAULT '{}',   -- per-resident detector/escalation overrides
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'away' OR away_until IS NOT NULL)
);
CREATE INDEX resident_household_idx ON resident (household_id);

CREATE TABLE gateway (
    id                 text PRIMARY KEY,
    name               text NOT NULL DEFAULT '',
    online             boolean,                  -- NULL: never heard from
    status_changed_at  timestamptz,
    last_seen          timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE device (
    id                 text PRIMARY KEY,
    key                integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    kind               text NOT NULL
                       CHECK (kind IN ('water_meter', 'smoke', 'gas', 'sos_button', 'away_button')),
    household_id       text NOT NULL REFERENCES household (id),
    resident_id        text REFERENCES resident (id),
    gateway_id         text NOT NULL REFERENCES gateway (id),
    -- how often the device is expected to report; drives the meter_silent rule
    report_interval_s  integer CHECK (report_interval_s > 0),
    last_seen          timestamptz,
    battery_v          real,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_household_idx ON device (household_id);
CREATE INDEX device_resident_idx ON device (resident_id);
CREATE INDEX device_gateway_idx ON device (gateway_id);

CREATE TABLE contact (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resident_id  text NOT NULL REFERENCES resident (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('love_key_holder', 'family', 'grid_worker',
                                               'community_staff', 'emergency')),
    position     integer NOT NULL CHECK (position >= 1),   -- order within the role, 1 first
    name         text NOT NULL DEFAULT '',
    phone        text,                                     -- E.164, e.g. +8613812345678
    push_url     text,                                     -- optional Apprise URL(s), space separated
    language     text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (resident_id, role, position)
);
