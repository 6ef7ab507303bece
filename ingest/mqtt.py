"""Broker addresses and paho-mqtt clients set up the way LoveKey uses them (MQTT 5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lovekey.errors import SettingsError


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # MQTT 5 unless the URL says `?protocol=3.1.1` (the pure-Python fallback broker)
    mqtt5: bool = True

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """`mqtt://user:pass@host:1883`, `mqtts://host` (port 8883), `...?protocol=3.1.1`."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise SettingsError("an MQTT URL looks like mqtt://user:pass@host:1883")
        protocol = parse_qs(parts.query).get("protocol", ["5"])[-1]
        if protocol not in ("5", "3.1.1"):
            raise SettingsError(f"MQTT protocol {protocol!r}: use 5 or 3.1.1")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            mqtt5=protocol == "5",
        )


def new_client(address: BrokerAddress, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A client with credentials and TLS applied; nothing connects yet.

    Under MQTT 3.1.1 the session is kept (clean session off); under MQTT 5 that is a
    connect option (`clean_start=False` with a session expiry).
    """
    if address.mqtt5:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=manual_ack,
        )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    return client


def connect_properties(*, session_expiry_s: int, receive_maximum: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_s
    properties.ReceiveMaximum = receive_maximum
    return properties
