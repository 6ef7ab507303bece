-- The door "going-out reminder" (温馨电子外出提示器) as a device of its own (issue #14): it
-- senses a person at the door and speaks a reminder. Its events: 'passage' (someone at the
-- door), and 'left' / 'returned' where the device tells the direction; like every battery
-- device it reports 'battery_low', and 'tamper' when taken off the wall. The detectors read
-- a passage as the resident up and about (detectors/service.py); it never raises an alert.
ALTER TABLE device DROP CONSTRAINT device_kind_check;
ALTER TABLE device ADD CONSTRAINT device_kind_check
    CHECK (kind IN ('water_meter', 'smoke', 'gas', 'sos_button', 'away_button', 'door_sensor'));
ALTER TABLE device_event DROP CONSTRAINT device_event_type_check;
ALTER TABLE device_event ADD CONSTRAINT device_event_type_check
    CHECK (type IN ('smoke', 'gas', 'sos', 'away', 'home', 'tamper', 'battery_low',
                    'passage', 'left', 'returned'));
