-- What the detector learned of each water meter's day, owned by the `detectors` package.
-- One row per meter and routine day (a day starts at detect.routine_day_start_h local time):
-- a bit per bucket saying whether water was used, and whether the day can be learned from
-- (complete data, no absence, no open no-use alert). It is derived data, recomputable from
-- water_reading; keeping it lets a restarted detector know each resident's routine at once
-- instead of re-reading weeks of readings. Rows made with other bucket settings are ignored.

CREATE TABLE detector_day (
    device_key   integer NOT NULL,
    day          date NOT NULL,       -- local date on which the routine day starts
    bucket_s     integer NOT NULL,
    day_start_s  integer NOT NULL,    -- local time of day the routine day starts, seconds
    use_bits     bytea NOT NULL,      -- numpy.packbits of the day's buckets, first bucket first
    valid        boolean NOT NULL,
    PRIMARY KEY (device_key, day)
);
CREATE INDEX detector_day_day_idx ON detector_day (day);
