"""Example payloads of the device sources, from each vendor's own documentation.

Each constant says where it comes from. Where a documented example carries no meter value
(ChirpStack's `up` example has a one-byte `data` and no codec output; The Things Stack's has
a temperature sensor's), the envelope is kept verbatim and the codec output is that of a real
water-meter codec, which is named beside it. Bad inputs are derived from these, one fault each.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

# -- ChirpStack v4 ----------------------------------------------------------------------------
# The `up` event JSON example of https://github.com/chirpstack/chirpstack-docs,
# src/chirpstack/integrations/events.md (verbatim), with the `object` a device-profile codec
# adds: the output of Axioma's LoRaWAN water-meter codec ("Codec for Axioma water meters:
# compatible with TTN, ChirpStack v4 and v3", 26 August 2024: CurrentTimestamp epoch seconds,
# StatusCode, CurrentVolume and LogVolume in m3 with 0.001 resolution, LogTimestamp).
CHIRPSTACK_UP: dict[str, Any] = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "Test application",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Test device-profile",
        "deviceName": "Test device",
        "devEui": "0101010101010101",
        "tags": {"key": "value"},
    },
    "devAddr": "00189440",
    "dr": 1,
    "fPort": 1,
    "data": "qg==",
    "rxInfo": [
        {
            "gatewayId": "0016c001f153a14c",
            "uplinkId": 4217106255,
            "rssi": -36,
            "snr": 10.5,
            "context": "E3OWOQ==",
            "metadata": {"region_name": "eu868", "region_common_name": "EU868"},
        }
    ],
    "txInfo": {
        "frequency": 867100000,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 11, "codeRate": "CR_4_5"}},
    },
    "object": {
        "CurrentTimestamp": 1658136600,
        "StatusCode": 0,
        "CurrentVolume": 123.456,
        "LogTimestamp": 1658135400,
        "LogVolume": 123.401,
    },
}
CHIRPSTACK_APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
CHIRPSTACK_OPTIONS = {"total_field": "CurrentVolume", "total_unit": "m3"}


def chirpstack_two_gateways() -> dict[str, Any]:
    """The same uplink heard by two radio gateways: ChirpStack deduplicates it into one event
    whose `rxInfo` lists both (the second gateway id is the one of ChirpStack's v3 event example,
    chirpstack.io/application-server/integrations/events)."""
    event = copy.deepcopy(CHIRPSTACK_UP)
    event["time"] = "2022-07-18T10:34:15.512347771+00:00"
    event["deduplicationId"] = "5b1e6f0e-8d0b-4f8e-9a2e-0d1c9c0f7a11"
    event["fCnt"] = 2
    event["object"] = {**event["object"], "CurrentTimestamp": 1658140200, "CurrentVolume": 123.512}
    second = copy.deepcopy(event["rxInfo"][0])
    second.update({"gatewayId": "0303030303030303", "uplinkId": 1938271, "rssi": -97, "snr": -3.5})
    event["rxInfo"].append(second)
    return event


# -- The Things Stack v3 ----------------------------------------------------------------------
# The "Uplink message example" of https://github.com/TheThingsIndustries/lorawan-stack-docs,
# doc/content/the-things-stack/concepts/data-formats/_index.md (verbatim), whose
# decoded_payload is a temperature sensor's ...
TTS_UP_DOCUMENTED: dict[str, Any] = {
    "end_device_ids": {
        "device_id": "dev1",
        "application_ids": {"application_id": "app1"},
        "dev_eui": "0004A30B001C0530",
        "join_eui": "800000000000000C",
        "dev_addr": "00BCB929",
    },
    "correlation_ids": [
        "as:up:01E0WZGT6Y7657CPFPE5WEYDSQ",
        "gs:conn:01E0WDEC6T5T4XXBAX7S1VMFKE",
        "gs:uplink:01E0WZGSZWT07NE5TS2APTV1Z9",
        "ns:uplink:01E0WZGSZXZXZS8RFAWZX0F2FY",
        "rpc:/ttn.lorawan.v3.GsNs/HandleUplink:01E0WZGSZXGE1KS577PFBWRJEE",
    ],
    "received_at": "2020-02-12T15:15:46.014773143Z",
    "uplink_message": {
        "session_key_id": "AXA50tHUGUucuzS/bCGMNw==",
        "f_cnt": 1,
        "frm_payload": "gkHe",
        "decoded_payload": {"temperature": 1.0, "luminosity": 0.64},
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": "gtw1", "eui": "9C5C8E00001A05C4"},
                "time": "2020-02-12T15:15:45.787Z",
                "timestamp": 2463457000,
                "rssi": -35,
                "channel_rssi": -35,
                "snr": 5,
                "uplink_token": "ChIKEAoEZ3R3MRIInFyOAAAaBcQQ6L3Vlgk=",
                "channel_index": 2,
            }
        ],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
            "coding_rate": "4/6",
            "frequency": "868300000",
            "timestamp": 2463457000,
            "time": "2020-02-12T15:15:45.787Z",
        },
        "consumed_airtime": "0.056576s",
        "locations": {
            "user": {
                "latitude": 37.97155556731436,
                "longitude": 23.72678801175413,
                "altitude": 10,
                "source": "SOURCE_REGISTRY",
            }
        },
        "version_ids": {
            "brand_id": "the-things-products",
            "model_id": "the-things-uno",
            "hardware_version": "1.0",
            "firmware_version": "quickstart",
            "band_id": "US_902_928",
        },
        "network_ids": {"net_id": "000013", "tenant_id": "tenant1", "cluster_id": "nam1"},
        "received_at": "2020-02-12T15:15:45.789585559Z",
    },
}
# ... so the meter's message is the same envelope with the Axioma codec's output (above).
TTS_UP: dict[str, Any] = copy.deepcopy(TTS_UP_DOCUMENTED)
TTS_UP["uplink_message"]["decoded_payload"] = {
    "CurrentTimestamp": 1581520500,
    "StatusCode": 0,
    "CurrentVolume": 87.032,
    "LogTimestamp": 1581519300,
    "LogVolume": 87.001,
}
TTS_TOPIC = "v3/app1@tenant1/devices/dev1/up"

# -- wmbusmeters ------------------------------------------------------------------------------
# https://github.com/wmbusmeters/wmbusmeters README.md: the JSON output example (iperl) and the
# multical21 line of the `--format=json` section, verbatim.
WMBUS_IPERL = (
    b'{\n    "_":"telegram",\n    "media":"water",\n    "meter":"iperl",\n    "name":"MyTapWater",\n'
    b'    "id":"33225544",\n    "max_flow_m3h":0,\n    "total_m3":123.529,\n'
    b'    "timestamp":"2024-03-03T18:37:00Z"\n}'
)
WMBUS_MULTICAL21 = (
    b'{"media":"cold water","meter":"multical21","name":"MyTapWater","id":"12345678","total_m3":6.388,'
    b'"target_m3":6.377,"max_flow_m3h":0.000,"flow_temperature":8,"external_temperature":23,'
    b'"current_status":"DRY","time_dry":"22-31 days","time_reversed":"","time_leaking":"",'
    b'"time_bursting":"","timestamp":"2018-02-08T09:07:22Z","device":"im871a[1234567]","rssi_dbm":-40}'
)

# -- Zigbee2MQTT ------------------------------------------------------------------------------
# State snapshots with the properties Zigbee2MQTT's device pages document: HEIMAN HS1SA smoke
# detector (smoke, battery_low, battery, linkquality: docs/devices/HS1SA.md) and HEIMAN HS1CG-M
# gas sensor (gas, battery_low, tamper, linkquality: docs/devices/HS1CG-M.md), in
# https://github.com/Koenkk/zigbee2mqtt.io; `last_seen` as `advanced.last_seen: ISO_8601` writes it.
Z2M_SMOKE_QUIET = {"smoke": False, "battery_low": False, "battery": 100, "linkquality": 120}
Z2M_SMOKE_ALARM = {"smoke": True, "battery_low": False, "battery": 100, "linkquality": 116}
Z2M_GAS_QUIET = {"gas": False, "battery_low": False, "tamper": False, "linkquality": 87}
Z2M_GAS_ALARM = {"gas": True, "battery_low": False, "tamper": False, "linkquality": 90}
# docs/guide/configuration/device-availability.md: legacy and JSON availability payloads
Z2M_ONLINE_LEGACY = b"online"
Z2M_OFFLINE_JSON = b'{"state":"offline"}'

# -- CJ/T 188 ---------------------------------------------------------------------------------
# The meter's answer of "CJ/T-188 水表协议解析" (https://cnblogs.com/yangykaifa/p/7010777.html,
# also https://hftangyu.com/563.html), as published: meter 0011223344 of maker 7833, 556677.00 m3,
# meter time 2015-05-11 22:01:31, status 21 84. Its printed checksum (08) is not the sum of its
# bytes (13): the published frame is itself a wrong-checksum case.
CJT188_PUBLISHED = (
    b"FE FE FE FE 68 10 44 33 22 11 00 33 78 81 16 1F 90 00 00 77 66 55 2C 00 77 66 55 2C"
    b" 31 01 22 11 05 15 20 21 84 08 16"
)
CJT188_ADDRESS = "78330011223344"


def cjt188_frame(body_hex: str, *, checksum: int | None = None, wake: int = 4) -> bytes:
    """A frame from its bytes between 68 and CS (hex), with the right checksum unless told."""
    core = bytes.fromhex("68" + body_hex.replace(" ", ""))
    cs = sum(core) & 0xFF if checksum is None else checksum
    return b"\xfe" * wake + core + bytes([cs, 0x16])


# the published answer, its checksum corrected (2018 byte order of DI: 1F 90)
CJT188_2018_BODY = (
    "10 44 33 22 11 00 33 78 81 16 1F 90 00 00 77 66 55 2C 00 77 66 55 2C 31 01 22 11 05 15 20 21 84"
)
# the same meter an hour later, 10 L more, in the 2004 byte order (DI 90 1F), low battery (D2)
CJT188_2004_BODY = (
    "10 44 33 22 11 00 33 78 81 16 90 1F 00 01 77 66 55 2C 00 77 66 55 2C 31 01 23 11 05 15 20 25 84"
)


def as_hex_text(frame: bytes) -> bytes:
    """A frame as a concentrator's hex text (`FE FE 68 ...`)."""
    return " ".join(f"{b:02X}" for b in frame).encode()


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)
