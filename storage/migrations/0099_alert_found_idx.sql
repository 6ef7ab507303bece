-- The detectors read on every sweep, per resident, the newest alert a person resolved as the
-- resident needing help (detectors/store.py `found_needing_help`): the days of that dry run
-- are not learned. Such alerts are few; a partial index keeps the read off a scan of every
-- alert ever raised.
CREATE INDEX alert_found_idx ON alert (since) WHERE outcome IN ('needed_help', 'hospital');
