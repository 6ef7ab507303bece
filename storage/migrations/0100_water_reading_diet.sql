-- The hot table on a diet (issue 15, item 4): two of water_reading's three 8-byte columns go
-- to 4 bytes, which takes a row of the common shape (no flow, with or without battery) from
-- 60 bytes of heap to 52 (docs/storage.md "The hot table").
--
-- * received_at (timestamptz) becomes received_s: whole seconds since 2000-01-01 UTC in an
--   int4 (until 2068). Its only readers are the detectors' and the packing job's "received
--   since" polls, which re-read an overlap anyway; the BRIN index follows the column.
-- * total_l (float8) becomes total_dl, whole decilitres in an int4 (to 214,748 m³), with
--   total_l_exact (float8) kept only for a total that is not a whole number of decilitres
--   (or is -0.0, or is too large): exactly one of the two is set, and
--   reading_total_l(total_dl, total_l_exact) gives back the float the meter sent, bit for bit.
-- * ts stays timestamptz: it is the partition (or hypertable) key and half of the primary key,
--   and keeps the microseconds a device sent.
--
-- Upgrading rewrites the hot table once, under a lock that holds ingest for the length of the
-- rewrite; packing first (`lovekey maintain`) leaves only the hot window to rewrite.

CREATE FUNCTION seconds_since_2000(timestamptz) RETURNS integer
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT (floor(date_part('epoch', $1)) - 946684800)::integer $$;  -- float8: per row, numeric costs

CREATE FUNCTION time_from_2000(integer) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT to_timestamp($1::float8 + 946684800) $$;

-- NULL when `total_l` does not come back exactly from whole decilitres in an int4.
CREATE FUNCTION whole_decilitres(double precision) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT CASE
            WHEN abs($1) <= 214748364.7 AND round($1 * 10) / 10 = $1 AND NOT ($1 = 0 AND $1::text = '-0')
            THEN round($1 * 10)::integer
        END
    $$;

-- What total_l_exact keeps of `total_l`: the float itself where whole_decilitres cannot.
CREATE FUNCTION total_l_exact_for(double precision) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN whole_decilitres($1) IS NULL THEN $1 END $$;

-- The total a row stores, as the float the meter sent.
CREATE FUNCTION reading_total_l(integer, double precision) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce($1::float8 / 10, $2) $$;

ALTER TABLE water_reading RENAME COLUMN total_l TO total_l_exact;
ALTER TABLE water_reading ALTER COLUMN total_l_exact DROP NOT NULL;
ALTER TABLE water_reading ADD COLUMN total_dl integer;
UPDATE water_reading
SET total_dl = whole_decilitres(total_l_exact), total_l_exact = total_l_exact_for(total_l_exact)
WHERE whole_decilitres(total_l_exact) IS NOT NULL;
ALTER TABLE water_reading
    ADD CONSTRAINT water_reading_one_total CHECK ((total_dl IS NULL) <> (total_l_exact IS NULL));

ALTER TABLE water_reading ALTER COLUMN received_at DROP DEFAULT;
ALTER TABLE water_reading ALTER COLUMN received_at TYPE integer USING seconds_since_2000(received_at);
ALTER TABLE water_reading RENAME COLUMN received_at TO received_s;
ALTER TABLE water_reading ALTER COLUMN received_s SET DEFAULT seconds_since_2000(now());

-- The hot table with its total and arrival widened back, for people, tests and tools: readable
-- as before the diet, and writable (one row at a time: ingest writes water_reading itself) with
-- a redelivered reading stored once, as ingest stores it.
CREATE VIEW water_reading_wide AS
SELECT ts,
       time_from_2000(received_s) AS received_at,
       reading_total_l(total_dl, total_l_exact) AS total_l,
       device_key,
       flow_lpm,
       battery_v
FROM water_reading;

CREATE FUNCTION water_reading_wide_insert() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    stored integer;
BEGIN
    INSERT INTO water_reading (ts, received_s, total_dl, total_l_exact, device_key, flow_lpm, battery_v)
    VALUES (NEW.ts, seconds_since_2000(coalesce(NEW.received_at, now())), whole_decilitres(NEW.total_l),
            total_l_exact_for(NEW.total_l), NEW.device_key, NEW.flow_lpm, NEW.battery_v)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS stored = ROW_COUNT;
    IF stored = 0 THEN
        RETURN NULL;  -- already stored: not counted as inserted
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER water_reading_wide_insert INSTEAD OF INSERT ON water_reading_wide
    FOR EACH ROW EXECUTE FUNCTION water_reading_wide_insert();
