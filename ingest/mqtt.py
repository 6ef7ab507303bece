"""Broker addresses and paho-mqtt clients set up the way LoveKey uses them (MQTT 5)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lovekey.config.settings import MqttSettings
from lovekey.errors import SettingsError


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """What an `mqtts://` connection trusts and shows: the CA that signed the broker's
    certificate (None: the system's CAs) and this client's certificate and key (None: none)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, mqtt: MqttSettings) -> TlsFiles:
        return cls(ca_file=mqtt.ca_file, cert_file=mqtt.cert_file, key_file=mqtt.key_file)

    @property
    def any(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # MQTT 5 unless the URL says `?protocol=3.1.1` (the pure-Python fallback broker)
    mqtt5: bool = True
    tls_files: TlsFiles = TlsFiles()

    @classmethod
    def parse(cls, url: str, tls_files: TlsFiles | None = None) -> BrokerAddress:
        """`mqtt://user:pass@host:1883`, `mqtts://host` (port 8883), `...?protocol=3.1.1`.

        TLS files only make sense with `mqtts://`, and a client key only with its certificate:
        either mistake is refused here rather than found as "not connected" later.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise SettingsError("an MQTT URL looks like mqtt://user:pass@host:1883")
        protocol = parse_qs(parts.query).get("protocol", ["5"])[-1]
        if protocol not in ("5", "3.1.1"):
            raise SettingsError(f"MQTT protocol {protocol!r}: use 5 or 3.1.1")
        tls = parts.scheme == "mqtts"
        tls_files = tls_files or TlsFiles()
        if tls_files.any and not tls:
            raise SettingsError("mqtt.ca_file/cert_file/key_file are set but the broker URL is mqtt://")
        if tls_files.key_file and not tls_files.cert_file:
            raise SettingsError("mqtt.key_file needs mqtt.cert_file (the client certificate)")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            mqtt5=protocol == "5",
            tls_files=tls_files,
        )

    def __str__(self) -> str:
        """`mqtts://user:***@host:8883`: the real scheme, never the password (for log lines)."""
        scheme = "mqtts" if self.tls else "mqtt"
        login = ""
        if self.username is not None:
            login = f"{self.username}:***@" if self.password is not None else f"{self.username}@"
        return f"{scheme}://{login}{self.host}:{self.port}"

    def session_client_id(self, name: str) -> str:
        """The client id this login uses for the session called `name`.

        MQTT lets any client that connects with a client id in use take that id's session
        over, and Mosquitto's password file and ACL cannot tie an id to a user: a gateway with
        its own valid password that connected as `lovekey-ingest` with a clean start would wipe
        the session in which the broker holds readings for a stopped ingester. So a login with
        a password seals the name with a tag derived from that password: stable across
        restarts (the session survives them), and unknown to anyone who does not already hold
        the ingester's password.
        """
        if self.password is None:
            return name
        tag = hashlib.sha256(b"lovekey mqtt session\0" + self.password.encode()).hexdigest()[:12]
        return f"{name}-{tag}"


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
        files = address.tls_files
        client.tls_set(
            ca_certs=_path(files.ca_file),
            certfile=_path(files.cert_file),
            keyfile=_path(files.key_file),
        )
    return client


def _path(path: Path | None) -> str | None:
    return None if path is None else str(path)


def connect_properties(
    *, session_expiry_s: int, receive_maximum: int, maximum_packet_size: int | None = None
) -> Properties:
    """CONNECT properties; a Maximum Packet Size asks the broker never to send us a bigger
    packet (it drops such a message for this client instead), so an oversized message is
    never in our memory even when the broker itself accepts it."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_s
    properties.ReceiveMaximum = receive_maximum
    if maximum_packet_size is not None:
        properties.MaximumPacketSize = maximum_packet_size
    return properties
