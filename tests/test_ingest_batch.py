"""The pure parts of the ingester: batch planning, the registry cache, the inbox, seen memory."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest

from lovekey.errors import PayloadError
from lovekey.ingest.batch import MAX_LISTED_ROW_ERRORS, DeviceEntry, plan_batch
from lovekey.ingest.codecs import decode_message
from lovekey.ingest.decoded import DecodedMessage
from lovekey.ingest.inbox import Inbound, Inbox
from lovekey.ingest.last_totals import LastTotals
from lovekey.ingest.registry_cache import RegistryCache
from lovekey.ingest.seen_memory import SeenMemory

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PREFIX = "lk"
DEVICES = {
    "WM-1": DeviceEntry(1, "GW-1", "water_meter", "R-1", "H-1"),
    "SM-1": DeviceEntry(2, "GW-1", "smoke", "R-1", "H-1"),
    "WM-2": DeviceEntry(3, "GW-2", "water_meter", "R-2", "H-2"),
}
GATEWAYS = {"GW-1", "GW-2"}


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    decoded: DecodedMessage | PayloadError
    source: str | None = None


def msg(topic: str, body: object) -> Msg:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    try:
        decoded: DecodedMessage | PayloadError = decode_message(PREFIX, f"{PREFIX}/{topic}", payload, now=NOW)
    except PayloadError as exc:
        decoded = exc
    return Msg(f"{PREFIX}/{topic}", payload, decoded)


def plan(*messages: Msg, keep_bytes: int = 8192):
    return plan_batch(messages, DEVICES, GATEWAYS, topic_prefix=PREFIX, now=NOW, keep_bytes=keep_bytes)


def ts(minutes: int) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat()


def test_rows_land_in_their_tables_and_devices_are_seen():
    result = plan(
        msg("GW-1/WM-1/reading", {"ts": ts(5), "total_l": 10.5, "battery_v": 3.5}),
        msg(
            "GW-1/WM-1/reading",
            {
                "readings": [
                    {"ts": ts(30), "total_l": 9.0, "battery_v": 3.4},
                    {"ts": ts(15), "total_l": 10.0},
                ]
            },
        ),
        msg("GW-1/SM-1/reading", {"ts": ts(1), "smoke": 0.1}),
        msg("GW-1/SM-1/event", {"ts": ts(1), "type": "smoke", "active": True, "value": 7}),
        msg("GW-2/status", "offline"),
    )
    assert result.water == [
        (NOW - timedelta(minutes=5), 10.5, 1, None, 3.5),
        (NOW - timedelta(minutes=30), 9.0, 1, None, 3.4),
        (NOW - timedelta(minutes=15), 10.0, 1, None, None),
    ]
    assert result.sensor == [(NOW - timedelta(minutes=1), 2, None, 0.1, None, None)]
    assert result.events == [(NOW - timedelta(minutes=1), 2, "smoke", True, 7.0)]
    assert result.rejected == []
    # the battery of the newest reading that carried one, not of the last one received
    assert result.devices_seen == {1: 3.5, 2: None}
    assert result.gateways_seen == {"GW-1": None, "GW-2": False}
    assert result.seen_at == NOW
    assert len(result.accepted_ts) == 5


def test_registry_rejections_keep_the_whole_message():
    result = plan(
        msg("GW-1/WM-404/reading", {"ts": ts(1), "total_l": 1}),
        msg("GW-1/WM-2/reading", {"ts": ts(1), "total_l": 1}),
        msg("GW-9/status", "online"),
        msg("GW-1/SM-1/reading", {"ts": ts(1), "total_l": 1}),
        msg("GW-1/WM-1/reading", {"ts": ts(1), "gas_lel_pct": 3}),
        msg("GW-1/WM-1/reading", {"ts": ts(1), "battery_v": 3.1}),
    )
    assert [(r[1], r[2], r[3]) for r in result.rejected] == [
        ("GW-1", "WM-404", "unknown_device"),
        ("GW-1", "WM-2", "wrong_gateway"),
        ("GW-9", None, "unknown_gateway"),
        ("GW-1", "SM-1", "wrong_kind"),
        ("GW-1", "WM-1", "wrong_kind"),
        ("GW-1", "WM-1", "missing_field"),
    ]
    assert result.rows == 0
    assert result.devices_seen == {}
    # GW-1's own devices spoke through it: it is alive even if what they said was refused
    assert result.gateways_seen == {"GW-1": None}
    assert plan(msg("GW-2/WM-404/reading", {"ts": ts(1), "total_l": 1})).gateways_seen == {}


def test_bad_rows_of_a_batch_are_rejected_together_each_with_its_reason():
    rows = [
        {"ts": ts(60), "total_l": 1},
        {"ts": ts(45), "total_l": -1},
        {"ts": ts(30), "gas_lel_pct": 2},
        {"ts": ts(15), "total_l": 3},
    ]
    result = plan(msg("GW-1/WM-1/reading", {"readings": rows}))
    assert [row[1] for row in result.water] == [1.0, 3.0]
    ((*_, reason, detail, kept, size),) = result.rejected
    assert reason == "bad_value"  # the first bad row's
    assert detail.startswith("2 of 4 readings rejected: readings[1]: bad_value: ")
    assert "; readings[2]: wrong_kind: " in detail
    assert orjson.loads(kept) == {"readings": rows}
    assert size == len(kept)


def test_a_batch_of_junk_rows_writes_one_rejected_row_and_keeps_its_good_rows():
    # issue 16, finding 7: 30,000 junk rows in one 60 KB message wrote 30,000 rejected rows
    good = {"ts": ts(15), "total_l": 3}
    payload = b'{"readings": [' + b"0," * 30_000 + orjson.dumps(good) + b"]}"
    assert len(payload) < 64 * 1024
    result = plan(msg("GW-1/WM-1/reading", payload), keep_bytes=1024)
    assert [row[1] for row in result.water] == [3.0]
    ((topic, gateway, device, reason, detail, kept, size),) = result.rejected
    assert (topic, gateway, device, reason) == ("lk/GW-1/WM-1/reading", "GW-1", "WM-1", "malformed_json")
    assert detail.startswith("30000 of 30001 readings rejected: readings[0]: malformed_json: ")
    assert detail.endswith("; and 29995 more")
    assert detail.count("readings[") == MAX_LISTED_ROW_ERRORS
    assert kept == payload[:1024]
    assert size == len(payload)


def plausible(*messages: Msg, last: LastTotals | None = None):
    return plan_batch(
        messages,
        DEVICES,
        GATEWAYS,
        topic_prefix=PREFIX,
        now=NOW,
        keep_bytes=8192,
        max_flow_lpm=60.0,
        last_totals=last,
    )


def test_a_total_rising_faster_than_a_pipe_can_deliver_is_rejected_in_its_batch():
    # issue 16, finding 3: +5e11 L in 15 minutes was stored and hid low_usage for 12 h
    rows = [
        {"ts": ts(60), "total_l": 1000},
        {"ts": ts(45), "total_l": 1005},
        {"ts": ts(30), "total_l": 5e11},
        {"ts": ts(15), "total_l": 1010},  # back below the jump: judged against it, a swap-like step
    ]
    result = plausible(msg("GW-1/WM-1/reading", {"readings": rows}))
    assert [row[1] for row in result.water] == [1000.0, 1005.0, 1010.0]
    ((*_, reason, detail, kept, _),) = result.rejected
    assert reason == "implausible_jump"
    assert detail.startswith("1 of 4 readings rejected: readings[2]: implausible_jump: total_l 5e+11 ")
    assert orjson.loads(kept) == {"readings": rows}
    # within 60 L/min: 900 L over 15 minutes is a lot of water, not an impossible jump
    fast = plausible(msg("GW-1/WM-1/reading", {"readings": [rows[0], {"ts": ts(45), "total_l": 1900}]}))
    assert len(fast.water) == 2
    assert fast.rejected == []


def test_a_jump_is_judged_against_the_last_reading_of_an_earlier_batch():
    last = LastTotals(max_devices=100)
    last.remember(np.array([1]), np.array([(NOW - timedelta(minutes=30)).timestamp()]), np.array([1000.0]))
    jump = plausible(msg("GW-1/WM-1/reading", {"ts": ts(15), "total_l": 5e11}), last=last)
    assert jump.water == []
    ((topic, _, device, reason, _, kept, _),) = jump.rejected
    assert (topic, device, reason) == ("lk/GW-1/WM-1/reading", "WM-1", "implausible_jump")
    assert orjson.loads(kept)["total_l"] == 5e11
    # the other meter, and this one's next ordinary reading, are stored
    ok = plausible(
        msg("GW-1/WM-1/reading", {"ts": ts(10), "total_l": 1100}),
        msg("GW-2/WM-2/reading", {"ts": ts(10), "total_l": 9e9}),
        last=last,
    )
    assert [row[1] for row in ok.water] == [1100.0, 9e9]
    assert ok.rejected == []
    # a redelivered reading (same time, same total) is no rise
    again = plausible(msg("GW-1/WM-1/reading", {"ts": ts(30), "total_l": 1000}), last=last)
    assert len(again.water) == 1
    assert again.rejected == []


@pytest.mark.parametrize(
    ("name", "before", "after", "stored"),
    [
        ("swap to a new meter", 812_345.0, 3.0, True),
        ("rollover of a 6-digit register", 999_990.0, 4.0, True),
        ("back by a little (a meter's own correction)", 1000.0, 999.5, True),
        ("swap to a used meter that reads higher", 1000.0, 50_000.0, False),
    ],
)
def test_a_swap_or_rollover_is_still_stored_and_a_higher_swap_after_one_reading(name, before, after, stored):
    last = LastTotals(max_devices=100)
    last.remember(np.array([1]), np.array([(NOW - timedelta(hours=1)).timestamp()]), np.array([before]))
    result = plausible(msg("GW-1/WM-1/reading", {"ts": ts(30), "total_l": after}), last=last)
    assert bool(result.water) is stored, name
    assert result.judged is not None
    last.remember(*result.judged)  # what the pipeline does after the commit
    # the meter's next reading rises slowly from the new register: stored in every case
    following = plausible(msg("GW-1/WM-1/reading", {"ts": ts(15), "total_l": after + 10}), last=last)
    assert [row[1] for row in following.water] == [after + 10]


def test_last_totals_keep_the_newest_reading_per_meter_and_stay_bounded():
    last = LastTotals(max_devices=10)
    last.remember(np.array([3, 3, 12]), np.array([200.0, 100.0, 50.0]), np.array([2.0, 1.0, 5.0]))
    last.remember(np.array([3]), np.array([150.0]), np.array([9.0]))  # older: not newest
    ts_s, total_l = last.lookup(np.array([3, 4, 12]))
    assert ts_s[0] == 200.0
    assert total_l[0] == 2.0
    assert np.isnan(ts_s[1:]).all()  # 4 never heard; 12 past the bound, not remembered


def test_undecodable_input_is_kept_cut_with_its_size_and_topic_ids():
    payload = b"{" + b"x" * 500
    result = plan(msg("GW-1/WM-1/reading", payload), keep_bytes=64)
    ((topic, gateway, device, reason, _, kept, size),) = result.rejected
    assert (topic, gateway, device, reason) == ("lk/GW-1/WM-1/reading", "GW-1", "WM-1", "malformed_json")
    assert kept == payload[:64]
    assert size == len(payload)
    bad_topic = plan(msg("nowhere", b"{}")).rejected[0]
    assert bad_topic[1:4] == (None, None, "bad_topic")


def test_registry_cache_asks_only_for_unknown_or_moved_ids_and_not_too_often():
    cache = RegistryCache(refresh_s=60, miss_retry_s=5)
    assert cache.refresh_due(0.0)
    cache.replace(dict(DEVICES), set(GATEWAYS), now_mono=100.0)
    assert not cache.refresh_due(159.0)
    assert cache.refresh_due(160.0)
    claims = [("GW-1", "WM-1"), ("GW-1", "WM-2"), ("GW-1", "X"), ("GW-3", None), ("GW-1", None)]
    devices, gateways = cache.stale_ids(claims, 100.0)
    assert (sorted(devices), gateways) == (["WM-2", "X"], ["GW-3"])
    moved = DeviceEntry(3, "GW-1", "water_meter", "R-2", "H-2")
    cache.merge(["WM-2", "X"], {"WM-2": moved}, ["GW-3"], set(), 100.0)
    assert cache.devices["WM-2"] == moved
    assert "X" not in cache.devices
    assert cache.stale_ids(claims, 104.0) == ([], [])  # asked recently
    assert sorted(cache.stale_ids(claims, 105.0)[0]) == ["X"]  # asked again after 5 s


def item(payload: bytes = b"x") -> Inbound:
    return Inbound("t", payload, 1, 1, 0, 0.0)


def test_inbox_takes_in_order_and_bounds_count_and_bytes():
    inbox = Inbox(max_messages=3, max_bytes=1 << 20)
    for n in range(3):
        assert inbox.put(item(bytes([n])))
    assert inbox.take(2, 0) == [item(b"\x00"), item(b"\x01")]
    blocked = threading.Event()
    done = threading.Event()

    def producer() -> None:
        inbox.put(item(b"\x03"))
        blocked.set()
        inbox.put(item(b"\x04"))  # the inbox holds 2 of 3: room for one more, then full
        inbox.put(item(b"\x05"))
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert blocked.wait(5)
    assert not done.wait(0.2)  # full: the network thread waits, the broker holds the rest
    assert len(inbox.take(10, 0)) == 3
    assert done.wait(5)
    thread.join()
    assert inbox.take(10, 0) == [item(b"\x05")]
    assert inbox.take(10, 0.01) == []


def test_inbox_bytes_limit_and_close_release_a_waiting_producer():
    inbox = Inbox(max_messages=100, max_bytes=10)
    assert inbox.put(item(b"123456"))
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(inbox.put(item(b"abcdef"))))
    thread.start()
    thread.join(0.2)
    assert thread.is_alive()
    inbox.close()
    thread.join(5)
    assert result == [False]
    # one oversized message alone is accepted, or it could never pass
    big = Inbox(max_messages=100, max_bytes=10)
    assert big.put(item(b"x" * 50))


def test_seen_memory_writes_when_stale_or_battery_changed():
    memory = SeenMemory(resolution_s=60)
    first = memory.due({5: 3.3, 2: None, 70_000: None}, now_mono=1000.0)
    assert first == [(2, None), (5, pytest.approx(3.3)), (70_000, None)]
    memory.written(first, 1000.0)
    assert memory.due({5: None, 2: None}, 1030.0) == []
    assert memory.due({5: 3.1, 2: None}, 1030.0) == [(5, pytest.approx(3.1))]
    assert memory.due({5: None, 2: None}, 1060.0) == [(2, None), (5, None)]


def test_inbox_taker_sleeps_until_what_it_waits_for_is_there():
    inbox = Inbox(max_messages=100, max_bytes=1 << 20)
    taken: list[list[Inbound]] = []
    thread = threading.Thread(target=lambda: taken.append(inbox.take(10, 30, at_least=3)))
    thread.start()
    inbox.put(item(b"1"))
    inbox.put(item(b"2"))
    thread.join(0.2)
    assert thread.is_alive()  # two of three: still asleep
    inbox.put(item(b"3"))
    thread.join(5)
    assert taken == [[item(b"1"), item(b"2"), item(b"3")]]
    # and at its deadline it takes what there is
    inbox.put(item(b"4"))
    assert inbox.take(10, 0.05, at_least=5) == [item(b"4")]


KIND_DEVICES = {
    "WM-1": DeviceEntry(1, "GW-1", "water_meter", "R-1", "H-1"),
    "SM-1": DeviceEntry(2, "GW-1", "smoke", "R-1", "H-1"),
    "GS-1": DeviceEntry(4, "GW-1", "gas", "R-1", "H-1"),
    "SOS-1": DeviceEntry(5, "GW-1", "sos_button", "R-1", "H-1"),
    "AW-1": DeviceEntry(6, "GW-1", "away_button", "R-1", "H-1"),
    "DR-1": DeviceEntry(7, "GW-1", "door_sensor", "R-1", "H-1"),
}


@pytest.mark.parametrize(
    ("device", "event_type", "accepted"),
    [
        # what each kind really sends
        ("WM-1", "battery_low", True),
        ("WM-1", "tamper", True),
        ("SM-1", "smoke", True),
        ("GS-1", "gas", True),
        ("SOS-1", "sos", True),
        ("AW-1", "away", True),
        ("AW-1", "home", True),
        ("AW-1", "battery_low", True),
        ("DR-1", "passage", True),
        ("DR-1", "left", True),
        ("DR-1", "returned", True),
        ("DR-1", "battery_low", True),
        ("DR-1", "tamper", True),
        # forged or confused: a meter cannot press SOS or go away, a smoke detector cannot
        # call for help, a gas detector cannot report smoke, a button has no tamper switch
        ("WM-1", "away", False),
        ("WM-1", "home", False),
        ("WM-1", "smoke", False),
        ("WM-1", "sos", False),
        ("SM-1", "sos", False),
        ("SM-1", "gas", False),
        ("GS-1", "smoke", False),
        ("SOS-1", "away", False),
        ("SOS-1", "tamper", False),
        ("AW-1", "sos", False),
        # the door reminder sees someone at the door: it is not an away button nor an alarm
        ("DR-1", "away", False),
        ("DR-1", "sos", False),
        ("WM-1", "passage", False),
        ("AW-1", "left", False),
    ],
)
def test_an_event_its_device_kind_cannot_produce_is_rejected(device, event_type, accepted):
    message = msg(f"GW-1/{device}/event", {"ts": ts(1), "type": event_type, "active": True})
    result = plan_batch([message], KIND_DEVICES, GATEWAYS, topic_prefix=PREFIX, now=NOW, keep_bytes=8192)
    if accepted:
        assert [row[2] for row in result.events] == [event_type]
        assert result.rejected == []
        return
    assert result.events == []
    assert result.devices_seen == {}
    [(_topic, gateway_id, device_id, reason, detail, payload, size)] = result.rejected
    assert (gateway_id, device_id, reason) == ("GW-1", device, "wrong_kind")
    assert KIND_DEVICES[device].kind in detail
    assert f"cannot send {event_type!r} events" in detail
    assert payload == message.payload
    assert size == len(message.payload)


def test_every_device_kind_has_its_events_and_every_event_a_device():
    from lovekey.vocabulary import EVENTS_BY_DEVICE_KIND, DeviceKind, EventType

    assert set(EVENTS_BY_DEVICE_KIND) == set(DeviceKind)
    assert set().union(*EVENTS_BY_DEVICE_KIND.values()) == set(EventType)
