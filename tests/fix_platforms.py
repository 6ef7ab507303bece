"""Platform pushes as the carriers send them, for the receiver's tests and benchmark.

Each example's source is cited beside it. Where a document gives a whole body it is used
verbatim; where it gives the envelope and a field table (OneNET), the body is built from
that table by `onenet_push`, signed and (optionally) encrypted exactly as OneNET's own
receiver samples check and decrypt it (github.com/cm-heclouds/data-push).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import orjson

# CTWing dataReport with the decoded payload given as the fields themselves (LwM2M product
# with a profile), as captured in unisoftcn/user-api forms/mag_notify.go (a parking sensor;
# abridged: its magnetometer axis and reserved fields are left out).
CTWING_DATA_REPORT_FIELDS = {
    "upPacketSN": -1,
    "upDataSN": -1,
    "topic": "v1/up/ad19",
    "timestamp": 1622186044981,
    "tenantId": "2000030881",
    "serviceId": 1,
    "protocol": "lwm2m",
    "productId": "15034864",
    "payload": {
        "version": 37,
        "type": 32,
        "ptime": 1622186096000,
        "parking_state": 0,
        "pack_count": 506,
        "mag_id": 127763,
        "battery_voltage": 3.6559998989105225,
        "Signal_Power": -90,
        "Model": "P_MD",
        "Manufacturer": "WXHS",
        "Alarm_info": 0,
    },
    "messageType": "dataReport",
    "deviceType": "",
    "deviceId": "87f4b2814f434992a94a4871b32c6b75",
    "assocAssetId": "",
    "IMSI": "undefined",
    "IMEI": "864016059485616",
}

# CTWing dataReport of an LwM2M product, payload {"serviceId", "serviceData"}; the smoke
# alarm push quoted in the LiAn smoke parser of a public fire-safety platform (found by
# the code search with `"messageType":"dataReport"`; same body in its LiAnSmokeEnum.java).
CTWING_DATA_REPORT_SERVICE_DATA = (
    b'{"upPacketSN":-1,"upDataSN":-1,"topic":"v1/up/ad19prof","timestamp":1606982320277,'
    b'"tenantId":"10461180","serviceId":"","protocol":"lwm2m","productId":"15014772",'
    b'"payload":{"serviceId":"notification","serviceData":{"TData":30,"SNR":1,"RSRP":114,'
    b'"IMEI":"860374051096202","Cell_ID_Length":8,"Cell_ID":"38848339","CSQ":5,'
    b'"Battery_Level":100,"Alarm_Status":2,"AlarmLevel":100}},"messageType":"dataReport",'
    b'"deviceType":"","deviceId":"acf7baaee65e431eadfb8f5fe50e8b81","assocAssetId":"",'
    b'"IMSI":"undefined","IMEI":"860374051096202"}'
)

# CTWing pass-through (APPdata) report, online notice and command response of one Huaqiang
# water meter, quoted in the WaterController of the same platform (code search:
# `deviceOnlineOfflineReport`).
CTWING_DATA_REPORT_APPDATA = (
    b'{"upPacketSN":"","upDataSN":"","topic":"v1/up/ad","timestamp":1589444235861,'
    b'"tenantId":"10461180","serviceId":"","protocol":"lwm2m","productId":"10053421",'
    b'"payload":{"APPdata":"UFUAPBAAAAYBAAMAJwMnuwpogDAwYGckCQYAAQAADjxkZAJVcVCnAAAAAAAAAEYA'
    b'AAAAAAAAAAEDJ7sKAAAAAA=="},"messageType":"dataReport","deviceType":"",'
    b'"deviceId":"44d0b9e48d404094bbbcf889e4e64ece","assocAssetId":"","IMSI":"undefined",'
    b'"IMEI":"860803030676429"}'
)
CTWING_ONLINE = (
    b'{"timestamp":1589444231825,"tenantId":"10461180","protocol":"lwm2m","productId":"10053421",'
    b'"messageType":"deviceOnlineOfflineReport","iccid":"undefined","eventType":1,'
    b'"deviceId":"44d0b9e48d404094bbbcf889e4e64ece"}'
)
CTWING_COMMAND_RESPONSE = (
    b'{"timestamp":1589444233258,"tenantId":"10461180","taskId":1,"result":{"resultDetail":"",'
    b'"resultCode":"DELIVERED"},"protocol":"lwm2m","productId":"10053421",'
    b'"messageType":"commandResponse","deviceId":"44d0b9e48d404094bbbcf889e4e64ece"}'
)

# Huawei OceanConnect deviceDataChanged, the request example of the northbound API reference
# https://support.huaweicloud.com/en-us/api-iothub/iot_06_0035.html (ids filled in: the
# page masks them with asterisks).
HUAWEI_DATA_CHANGED = {
    "notifyType": "deviceDataChanged",
    "requestId": "req-0001",
    "deviceId": "a2664352-9505-45a5-9913-ae01a2660566",
    "gatewayId": "a2664352-9505-45a5-9913-ae01a2660566",
    "service": {
        "serviceId": "Brightness",
        "serviceType": "Brightness",
        "data": {"brightness": 80},
        "eventTime": "20170311T163657Z",
    },
}
# deviceDatasChanged, https://support.huaweicloud.com/en-us/api-iothub/iot_06_0036.html
# (its example spells the list `service`; the parameter table says `services`)
HUAWEI_DATAS_CHANGED = {
    "notifyType": "deviceDatasChanged",
    "requestId": "req-0002",
    "deviceId": "a2664352-9505-45a5-9913-ae01a2660566",
    "gatewayId": "a2664352-9505-45a5-9913-ae01a2660566",
    "service": [
        {
            "serviceId": "Brightness",
            "serviceType": "Brightness",
            "data": {"brightness": 80},
            "eventTime": "20170311T163657Z",
        },
        {
            "serviceId": "Color",
            "serviceType": "Color",
            "data": {"value": "red"},
            "eventTime": "20170311T163657Z",
        },
    ],
}


def ctwing_report(imei: str, timestamp_ms: int, service_data: dict[str, Any], device_id: str = "") -> bytes:
    """A CTWing dataReport in the documented envelope (the keys and order of the captured
    pushes above), carrying `service_data` as an LwM2M product's serviceData."""
    return orjson.dumps(
        {
            "upPacketSN": -1,
            "upDataSN": -1,
            "topic": "v1/up/ad19",
            "timestamp": timestamp_ms,
            "tenantId": "2000030881",
            "serviceId": "",
            "protocol": "lwm2m",
            "productId": "15034864",
            "payload": {"serviceId": "meter", "serviceData": service_data},
            "messageType": "dataReport",
            "deviceType": "",
            "deviceId": device_id or hashlib.md5(imei.encode(), usedforsecurity=False).hexdigest(),
            "assocAssetId": "",
            "IMSI": "undefined",
            "IMEI": imei,
        }
    )


def huawei_notify(device_id: str, event_time: str, data: dict[str, Any]) -> bytes:
    """A deviceDataChanged in the reference's shape (see HUAWEI_DATA_CHANGED)."""
    return orjson.dumps(
        {
            "notifyType": "deviceDataChanged",
            "requestId": None,
            "deviceId": device_id,
            "gatewayId": device_id,
            "service": {
                "serviceId": "WaterMeter",
                "serviceType": "WaterMeter",
                "data": data,
                "eventTime": event_time,
            },
        }
    )


# OneNET data point (type 1) and online/offline (type 2) messages, built from the field
# table of https://open.iot.10086.cn/doc/nb-iot/book/manual/httppush/develop-manual.html
def onenet_point(dev_id: int, ds_id: str, at_ms: int, value: Any) -> dict[str, Any]:
    return {"at": at_ms, "type": 1, "ds_id": ds_id, "value": value, "dev_id": dev_id}


def onenet_status(dev_id: int, at_ms: int, online: bool) -> dict[str, Any]:
    return {"at": at_ms, "login_type": 10, "type": 2, "dev_id": dev_id, "status": 1 if online else 0}


def onenet_signature(token: str, nonce: str, msg: str) -> str:
    # base64(md5(token + nonce + msg)): Util.checkSignature in cm-heclouds/data-push
    return base64.b64encode(
        hashlib.md5((token + nonce + msg).encode(), usedforsecurity=False).digest()
    ).decode()


def onenet_push(msg: Any, token: str, *, nonce: str = "abcdefgh", aes_key: str | None = None) -> bytes:
    """A OneNET push body: plain `{"msg", "msg_signature", "nonce"}`, or with `aes_key`
    (the 43-character EncodingAESKey) `{"enc_msg", ...}` as its samples decrypt it."""
    text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False)
    if aes_key is None:
        return orjson.dumps(
            {"msg": msg, "msg_signature": onenet_signature(token, nonce, text), "nonce": nonce}
        )
    enc_msg = onenet_encrypt(text.encode(), aes_key)
    return orjson.dumps(
        {"enc_msg": enc_msg, "msg_signature": onenet_signature(token, nonce, enc_msg), "nonce": nonce}
    )


def onenet_encrypt(message: bytes, aes_key: str) -> str:
    """16 random bytes, the length (4 bytes big-endian), the message; AES-256-CBC with the
    key base64(EncodingAESKey + "=") and its first 16 bytes as IV, PKCS#7 (Util.decryptMsg
    and NodeJS/data_push_demo.js in cm-heclouds/data-push)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(aes_key + "=")
    plain = os.urandom(16) + len(message).to_bytes(4, "big") + message + b"lovekey-test-appid"
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def new_aes_key() -> str:
    """An EncodingAESKey as OneNET shows it: 32 bytes in base64 without the final `=`."""
    return base64.b64encode(os.urandom(32)).decode().rstrip("=")
