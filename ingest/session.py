"""The ingester's MQTT session: paho's client, its subscriptions, and acknowledgement after commit.

paho's network thread (`loop_start`) reads the socket, reconnects when the connection
drops, and puts each message in the `Inbox`; the broker never sends more than the Receive
Maximum of unacknowledged QoS 1 messages, and `ack` is called only for messages whose
batch was committed, so while the database is down the broker holds the stream, not our
memory. paho stays (not aiomqtt) because it is the faster of the two here: about 39,500
against 21,000 QoS 1 messages/s in one process (DESIGN.md).

Acknowledgements carry the connection generation they belong to: after a reconnect the
broker resends what was unacknowledged, and a packet id from the old connection must not
acknowledge a different message on the new one.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from lovekey.config.settings import MqttSettings
from lovekey.ingest.inbox import Inbound, Inbox
from lovekey.ingest.metrics import IngestMetrics
from lovekey.ingest.mqtt import BrokerAddress, connect_properties, new_client
from lovekey.retry import Backoff

log = logging.getLogger(__name__)
PAHO_LOGGER = "lovekey.ingest.paho"
_NOT_CONNECTED = "Client is not connected"

# Waits between reconnect attempts to the broker: from 1 s, doubling, up to 30 s.
RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 30.0


class MqttSession:
    """`with MqttSession(...) as session:` connects (in paho's thread, retrying) and subscribes.

    `retire=True` takes over a shared member's session without subscribing: the broker
    delivers what it queued for that client id and nothing new. Set `end_session` once
    all of it is written, and leaving the block tells the broker to forget the session.
    """

    def __init__(
        self,
        settings: MqttSettings,
        broker: BrokerAddress,
        client_id: str,
        *,
        inbox: Inbox,
        metrics: IngestMetrics,
        shared_group: str | None = None,
        retire: bool = False,
        source_filters: tuple[tuple[str, ...], ...] = (),
    ) -> None:
        self.settings = settings
        # the filters of each configured MQTT source, by its index (0, the native contract,
        # has the prefix topics below); a message matching one is tagged with that index
        self.source_filters = source_filters
        self.broker = broker
        self.client_id = client_id
        self.shared_group = shared_group
        self.retire = retire
        self.end_session = False  # on leaving, ask the broker to forget the session
        self.subscribed = threading.Event()  # set by SUBACK (or UNSUBACK when retiring)
        self.last_message_mono = time.monotonic()
        self.reconnect_backoff = Backoff(first_s=RECONNECT_FIRST_S, max_s=RECONNECT_MAX_S)
        self._inbox = inbox
        self._metrics = metrics
        self._lock = threading.Lock()  # guards the generation and acks against reconnects
        self._generation = 0
        self._connected_once = False
        self._closing = False
        self._client: mqtt.Client | None = None

    def _paho_logger(self) -> logging.Logger:
        """paho's messages, into `lovekey.ingest.paho` (its level and handlers), through a
        logger of this session's own whose filter knows whether this session is closing. It
        is not registered with `logging`, so sessions do not pile up there (nor does a new
        session of the same client id inherit an old one's filter); like any logger it
        remembers the level it found, so logging is set up before sessions start."""
        paho_log = logging.Logger(PAHO_LOGGER)
        paho_log.parent = logging.getLogger(PAHO_LOGGER)
        paho_log.addFilter(self._paho_record_wanted)
        return paho_log

    def _paho_record_wanted(self, record: logging.LogRecord) -> bool:
        """Between our `disconnect()` and `loop_stop()` paho's network thread may go round once
        more, find the socket closed and log "Client is not connected" as an error: expected
        while we close (it went into the README demo's last lines), a fault at any other time."""
        return not (self._closing and record.getMessage().startswith(_NOT_CONNECTED))

    def topics(self) -> list[str]:
        prefix = self.settings.topic_prefix
        share = f"$share/{self.shared_group}/" if self.shared_group else ""
        native = [f"{share}{prefix}/+/+/reading", f"{share}{prefix}/+/+/event", f"{share}{prefix}/+/status"]
        return native + [share + f for filters in self.source_filters[1:] for f in filters]

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        client = new_client(self.broker, self.client_id, manual_ack=True)
        # an error in a callback must not end paho's network thread: it is logged instead
        client.enable_logger(self._paho_logger())
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        # paho matches a message's topic against these filters and calls the one that
        # matches (without the $share prefix): no topic matching of ours on the hot path
        for index, filters in enumerate(self.source_filters):
            for topic_filter in filters:
                client.message_callback_add(topic_filter, self._source_callback(index))
        self._next_reconnect_wait(client)
        settings = self.settings
        if self.broker.mqtt5:
            client.connect_async(
                self.broker.host,
                self.broker.port,
                keepalive=settings.keepalive_s,
                clean_start=False,
                properties=connect_properties(
                    session_expiry_s=settings.session_expiry_s,
                    receive_maximum=settings.receive_maximum,
                    maximum_packet_size=settings.max_packet_bytes,
                ),
            )
        else:  # the session is kept by the client's clean_session=False
            client.connect_async(self.broker.host, self.broker.port, keepalive=settings.keepalive_s)
        client.loop_start()
        self._client = client
        log.info(
            "ingest connecting to %s as %s%s",
            self.broker,
            self.client_id,
            f" (shared group {self.shared_group})" if self.shared_group else "",
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self._client
        if client is None:
            return
        self._closing = True
        self._inbox.close()  # a network thread waiting for room gives up
        if self.end_session:  # everything it held is written: the broker may forget it
            ending = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            ending.SessionExpiryInterval = 0
            client.disconnect(properties=ending)
        else:
            client.disconnect()
        client.loop_stop()
        self._client = None

    def connected(self) -> bool:
        """Whether the broker connection is up now (the ingester's readiness check)."""
        client = self._client
        return client is not None and client.is_connected()

    # -- acknowledging (the writer's thread) ----------------------------------------------

    def ack(self, committed: list[Inbound]) -> None:
        """Acknowledge `committed` (their batch is in the database) on the connection they came by.

        Messages of an earlier connection are skipped: the broker resends them on this one
        with new packet ids, and the primary keys absorb the second copy.
        """
        client = self._client
        assert client is not None, "ack() needs the session entered (with MqttSession(...))"
        acked = 0
        # under the lock, so a reconnect cannot slip in between reading the generation
        # and sending the PUBACKs that belong to it
        with self._lock:
            generation = self._generation
            for item in committed:
                if item.qos and item.generation == generation:
                    client.ack(item.mid, item.qos)
                    acked += 1
        self._metrics.acked += acked

    # -- paho callbacks (network thread) --------------------------------------------------

    def _next_reconnect_wait(self, client: mqtt.Client) -> None:
        """Tell paho how long its next wait before reconnecting is: jittered, from `Backoff`.

        paho's network thread owns reconnecting (it must: it owns the socket) and sleeps
        its reconnect delay after every failed or lost connection, doubling it without
        jitter. Setting the delay to one jittered value before each wait keeps one back-off
        for every retry loop and spreads a fleet of ingesters that lost the broker together.
        """
        delay_s = self.reconnect_backoff.next_delay_s()
        client.reconnect_delay_set(delay_s, delay_s)  # type: ignore[arg-type]  # paho says int; sleeps a float

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            self._next_reconnect_wait(client)  # it closes the socket; wait longer each time
            return
        self.reconnect_backoff.reset()
        self._next_reconnect_wait(client)  # the first wait after this connection drops
        with self._lock:
            self._generation += 1
        again = "re" if self._connected_once else ""
        self._connected_once = True
        log.info("%sconnected to the broker (session present: %s)", again, flags.session_present)
        if self.retire:  # take what the session holds, and no new messages
            client.unsubscribe(self.topics())
        elif self.broker.mqtt5:
            client.subscribe([(topic, SubscribeOptions(qos=1)) for topic in self.topics()])
        else:
            client.subscribe([(topic, 1) for topic in self.topics()])

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # the broker did not answer; paho waits the delay set here, then tries again
        log.debug("broker unreachable; trying again")
        self._next_reconnect_wait(client)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        with self._lock:
            self._generation += 1
        self.subscribed.clear()
        if not self._closing:
            log.warning("lost the broker connection (%s); reconnecting", reason)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons_: list[ReasonCode],
        properties: Any,
    ) -> None:
        failed = [str(r) for r in reasons_ if r.is_failure]
        if failed:
            log.error("subscription refused by the broker: %s", ", ".join(failed))
        else:
            self.subscribed.set()

    def _on_unsubscribe(self, client: mqtt.Client, *args: Any) -> None:
        log.info("unsubscribed: writing what the session still holds, then retiring it")
        self.subscribed.set()

    def _source_callback(self, index: int) -> Any:
        def on_source_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            self._on_message(client, userdata, message, index)

        return on_source_message

    def _on_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage, source: int = 0
    ) -> None:
        # the hot path: one call per message, so nothing here but counting and queueing
        self._metrics.received += 1
        self.last_message_mono = time.monotonic()
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers refuse such topics; kept as bad_topic regardless
            topic = bytes(message._topic).decode("utf-8", "replace")
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        self._inbox.put(
            Inbound(topic, payload, message.mid, message.qos, self._generation, time.monotonic(), source)
        )
