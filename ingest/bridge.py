"""`lovekey bridge`: read a source on its own broker, republish it on LoveKey's.

A ChirpStack, The Things Stack or Zigbee2MQTT installation often has a broker of its own
(The Things Stack's is a cloud service). For each `[[sources]]` entry with a `broker_url`,
the bridge subscribes there to the source's topic and republishes every message, bytes
unchanged, on LoveKey's broker under `{topic_prefix}-bridge/{source name}/{original topic}`
at QoS 1, where the ingester reads it with the source's adapter (`ingest.sources`) and
acknowledges it only after it is committed.

What can be lost: a message the source publishes at QoS 0 (The Things Stack serves only QoS
0; ChirpStack's integration publishes at QoS 0 unless told otherwise) while the bridge is
disconnected from the source's broker, and the messages between the source's broker and
LoveKey's in the moment the bridge itself dies (it takes a message from the source before
LoveKey's broker has acknowledged the copy). At QoS 1 with a persistent session
(`qos = 1`, the default) the source's broker keeps what arrives while the bridge is away.
docs/sources/ says how to avoid the rest (run the source's integration against LoveKey's
broker directly, or use the source's webhook with `lovekey receive`).

Each bridge is an `async with` of two aiomqtt clients in one `asyncio.TaskGroup` task named
after its source; a lost connection (either side) is retried on `lovekey.retry.Backoff`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lovekey.config import Settings, SourceSettings
from lovekey.ingest.mqtt import BrokerAddress, TlsFiles
from lovekey.ingest.sources import adapter_for, bridge_root
from lovekey.retry import Backoff

log = logging.getLogger(__name__)

# Messages taken from the source's broker and not yet acknowledged by LoveKey's: a bound on
# what a crash of the bridge can lose, and on its memory.
MAX_INFLIGHT = 1000
# how long either broker keeps the bridge's session (and its QoS 1 messages) while it is away
SESSION_EXPIRY_S = 7 * 24 * 3600


def bridged_sources(settings: Settings, names: Sequence[str] = ()) -> list[SourceSettings]:
    """The MQTT sources with a broker of their own (those named, or all)."""
    found = [s for s in settings.sources if s.broker_url and not s.is_http and (not names or s.name in names)]
    missing = set(names) - {s.name for s in found}
    if missing:
        from lovekey.errors import SettingsError

        raise SettingsError(
            f"no bridged source named {', '.join(sorted(missing))} (a source with broker_url)"
        )
    return found


async def run_bridges(
    settings: Settings, lovekey_url: str, stop: asyncio.Event, names: Sequence[str] = ()
) -> None:
    """Bridge every source with a broker of its own until `stop` is set."""
    sources = bridged_sources(settings, names)
    local = BrokerAddress.parse(lovekey_url, TlsFiles.from_settings(settings.mqtt))
    async with asyncio.TaskGroup() as group:
        for source in sources:
            group.create_task(_bridge_forever(settings, source, local, stop), name=f"bridge-{source.name}")


async def _bridge_forever(
    settings: Settings, source: SourceSettings, local: BrokerAddress, stop: asyncio.Event
) -> None:
    assert source.broker_url is not None
    remote = BrokerAddress.parse(source.broker_url)
    topic = adapter_for(source, settings).topic
    prefix = f"{bridge_root(settings)}/{source.name}/"
    backoff = Backoff(first_s=1.0, max_s=30.0)
    while not stop.is_set():
        try:
            await _bridge_once(source, remote, local, topic, prefix, stop, settings.mqtt.client_id)
            return
        except aiomqtt.MqttError as exc:
            delay = backoff.next_delay_s()
            log.warning("bridge %s: %s; reconnecting in %.1fs", source.name, exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                continue


async def _bridge_once(
    source: SourceSettings,
    remote: BrokerAddress,
    local: BrokerAddress,
    topic: str,
    prefix: str,
    stop: asyncio.Event,
    client_id: str,
) -> None:
    async with (
        _client(remote, f"{client_id}-bridge-{source.name}") as upstream,
        _client(local, f"{client_id}-bridge-{source.name}-out") as downstream,
    ):
        await upstream.subscribe(topic, qos=source.qos)
        log.info("bridge %s: %s on %s -> %s... on LoveKey's broker", source.name, topic, remote, prefix)
        inflight = asyncio.Semaphore(MAX_INFLIGHT)
        stopping = asyncio.create_task(stop.wait(), name=f"bridge-{source.name}-stop")
        try:
            async with asyncio.TaskGroup() as group:
                messages = aiter(upstream.messages)
                while True:
                    receiving = asyncio.ensure_future(anext(messages))
                    done, _ = await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if stopping in done:
                        receiving.cancel()
                        return
                    message = receiving.result()
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    await inflight.acquire()
                    group.create_task(
                        _forward(downstream, prefix + message.topic.value, payload, inflight),
                        name=f"bridge-{source.name}-publish",
                    )
        finally:
            stopping.cancel()


async def _forward(client: aiomqtt.Client, topic: str, payload: bytes, inflight: asyncio.Semaphore) -> None:
    try:
        await client.publish(topic, payload, qos=1)  # returns once LoveKey's broker has it
    finally:
        inflight.release()


def _client(address: BrokerAddress, identifier: str) -> aiomqtt.Client:
    """An aiomqtt client for one side, with a session the broker keeps while we are away."""
    tls_context = None
    if address.tls:
        files = address.tls_files
        tls_context = ssl.create_default_context(cafile=str(files.ca_file) if files.ca_file else None)
        if files.cert_file:
            tls_context.load_cert_chain(str(files.cert_file), str(files.key_file) if files.key_file else None)
    if address.mqtt5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        return aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            tls_context=tls_context,
        )
    return aiomqtt.Client(
        address.host,
        address.port,
        username=address.username,
        password=address.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=False,
        tls_context=tls_context,
    )
