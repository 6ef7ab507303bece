"""Configured device sources: each `[[sources]]` entry, and the adapter that reads its messages.

LoveKey's own gateways speak the native contract (`ingest.codecs`); meters and alarms in the
field report through tools and platforms that cannot change their format (docs/sources/). A
source adapter is the pure core that turns one message of such a source into what the native
codecs produce, a `DecodedMessage`:

    adapter = adapter_for(source_settings, settings)
    decoded = adapter.decode(topic, payload, context)   # or raises PayloadError(reason, detail)

- `topic` is the topic as the source published it (a bridge's prefix taken off) or, for the
  HTTP kinds, the request path; `payload` the bytes as received; `context` the time limits of
  `ingest.codecs.DecodeContext` (`now` is the receipt time: the clock of a snapshot that says
  no time of its own).
- The result names the device by its id at the source: `device_id` is that id,
  `external=True`, and `gateway_id` is the gateway the source's devices are registered to
  (`SourceSettings.gateway`). The ingester finds the device by the registry's `external_id`
  (`ingest.registry_cache`), so an adapter never touches the database.
- Readings, events, `levels` (state snapshots, stored as events where they change) and
  gateway `status` are the native ones; times are aware, totals in litres.
- Anything unacceptable raises `PayloadError` with a code of `ingest.reasons`; the ingester
  keeps the bytes in `rejected_input` with the reason and the source's name. Nothing raised
  here stops the stream.

Adapters are registered by kind, one `register()` per module, and imported on first use
(`_MODULES`), so a deployment pays only for the kinds it configures. Nothing here does I/O.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar
from zoneinfo import ZoneInfo

from lovekey.config import Settings, SourceSettings
from lovekey.errors import SettingsError
from lovekey.ingest.codecs import DecodeContext
from lovekey.ingest.decoded import DecodedMessage

# The kind -> module that registers its adapter. The HTTP kinds (ctwing, onenet, huawei) are
# read by `lovekey receive`; their modules register the same way.
_MODULES: dict[str, str] = {
    "chirpstack": "lovekey.ingest.sources.chirpstack",
    "tts": "lovekey.ingest.sources.tts",
    "wmbusmeters": "lovekey.ingest.sources.wmbusmeters",
    "zigbee2mqtt": "lovekey.ingest.sources.zigbee2mqtt",
    "cjt188": "lovekey.ingest.sources.cjt188_source",
    "ctwing": "lovekey.ingest.sources.ctwing",
    "onenet": "lovekey.ingest.sources.onenet",
    "huawei": "lovekey.ingest.sources.huawei",
}
# The name of the native source when no `[[sources]]` entry of kind "native" names it.
NATIVE = "native"


class SourceAdapter:
    """Reads one source's messages. Subclasses set `kind` (and `default_topic` for MQTT kinds)
    and implement `decode`; everything they need from the settings is decided here, once."""

    kind: ClassVar[str]
    # the subscription filter when the entry gives no `topic` (MQTT kinds)
    default_topic: ClassVar[str | None] = None

    def __init__(self, source: SourceSettings, *, zone: ZoneInfo) -> None:
        self.source = source
        self.name = source.name
        self.gateway_id = source.gateway
        self.zone = zone  # for clocks that say no zone

    @property
    def topic(self) -> str:
        topic = self.source.topic or self.default_topic
        if topic is None:
            raise SettingsError(f"source {self.name}: a {self.kind} source needs a topic")
        return topic

    def decode(self, topic: str, payload: bytes, context: DecodeContext) -> DecodedMessage:
        """One message as LoveKey's decoded form; raises `PayloadError` with a reason."""
        raise NotImplementedError

    def __repr__(self) -> str:  # never the token or a broker password
        return f"<{type(self).__name__} {self.name} gateway={self.gateway_id}>"


_ADAPTERS: dict[str, type[SourceAdapter]] = {}


def register(adapter: type[SourceAdapter]) -> type[SourceAdapter]:
    """Make `adapter` the reader of sources of its `kind` (usable as a class decorator)."""
    if adapter.kind in _ADAPTERS:
        raise ValueError(f"an adapter for {adapter.kind!r} is already registered")
    _ADAPTERS[adapter.kind] = adapter
    return adapter


def adapter_for(source: SourceSettings, settings: Settings) -> SourceAdapter:
    """The adapter of one configured source, built once (its module imported on first use)."""
    if source.kind not in _ADAPTERS:
        module = _MODULES.get(source.kind)
        if module is None:
            raise SettingsError(f"source {source.name}: no adapter for kind {source.kind!r}")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise SettingsError(f"source {source.name}: kind {source.kind!r} is not available here") from exc
    return _ADAPTERS[source.kind](source, zone=source.zone(settings.timezone))


def bridge_root(settings: Settings) -> str:
    """Where `lovekey bridge` republishes sources read on their own brokers: `{prefix}-bridge`."""
    return f"{settings.mqtt.topic_prefix}-bridge"


@dataclass(frozen=True, slots=True)
class MqttSource:
    """A source the ingester reads on LoveKey's broker: what it subscribes to, who decodes."""

    name: str
    adapter: SourceAdapter | None  # None: the native contract (ingest.codecs)
    filters: tuple[str, ...]  # on LoveKey's broker; empty for the native source (the session's)
    # received topics start with this (a bridged source's republishing prefix); the adapter
    # sees the topic without it, as the source published it
    strip: str = ""


def mqtt_sources(settings: Settings) -> tuple[MqttSource, ...]:
    """The native source first (always read), then each configured MQTT source in order."""
    native_name = next((s.name for s in settings.sources if s.kind == "native"), NATIVE)
    found = [MqttSource(native_name, None, ())]
    for source in settings.sources:
        if source.is_http or source.kind == "native":
            continue
        adapter = adapter_for(source, settings)
        if source.broker_url:
            strip = f"{bridge_root(settings)}/{source.name}/"
            found.append(MqttSource(source.name, adapter, (strip + adapter.topic,), strip))
        else:
            found.append(MqttSource(source.name, adapter, (adapter.topic,)))
    return tuple(found)


__all__ = [
    "NATIVE",
    "MqttSource",
    "SourceAdapter",
    "adapter_for",
    "bridge_root",
    "mqtt_sources",
    "register",
]
