-- Real device sources (docs/sources/): a device is known to its source by an id of the
-- source's own - a LoRaWAN DevEUI, an NB-IoT IMEI, a CJ/T 188 address, a OneNET dev_id, a
-- Zigbee IEEE address or friendly name. The source's devices are registered to the gateway
-- its `[[sources]]` entry names, so the id need only be unique within that gateway; case is
-- ignored (ChirpStack writes a DevEUI in lower case, The Things Stack in upper case).
ALTER TABLE device ADD COLUMN external_id text
    CHECK (external_id IS NULL OR external_id <> '');
CREATE UNIQUE INDEX device_external_id_idx ON device (gateway_id, lower(external_id))
    WHERE external_id IS NOT NULL;
-- a platform that names the device only by its id (the HTTP receivers) looks it up alone
CREATE INDEX device_external_id_any_idx ON device (lower(external_id))
    WHERE external_id IS NOT NULL;

-- Which configured source refused the input, and the device id as that source named it.
ALTER TABLE rejected_input ADD COLUMN source text;
ALTER TABLE rejected_input ADD COLUMN external_id text;
CREATE INDEX rejected_input_source_idx ON rejected_input (source, received_at)
    WHERE source IS NOT NULL;
