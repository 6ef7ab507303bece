"""The compact codec alone: every column of every reading comes back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lovekey.storage.compact import (
    DAY_US,
    CodecError,
    WaterColumns,
    decode_day,
    decode_days,
    encode_days,
)

_T0 = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z in microseconds

_float32 = st.one_of(st.none(), st.floats(width=32, allow_nan=False))
_total = st.one_of(
    st.integers(-(10**12), 10**12).map(lambda dl: dl / 10.0),  # whole decilitres, as meters report
    st.integers(0, 300).map(lambda dl: 12_345.6 + dl / 10.0),  # small steps: narrow widths
    st.floats(-1e9, 1e12, allow_nan=False),  # anything else a decoder may have stored
)


@st.composite
def _readings(draw: st.DrawFn) -> WaterColumns:
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(1, 4),  # meter
                st.one_of(  # around three days: whole seconds (most meters) or microseconds
                    st.integers(-2 * 86_400, 3 * 86_400).map(lambda s: s * 1_000_000),
                    st.integers(-2 * DAY_US, 3 * DAY_US),
                ),
                _total,
                _float32,
                _float32,
                st.integers(0, 10**6),
            ),
            min_size=1,
            max_size=300,
            unique_by=lambda r: (r[0], r[1]),
        )
    )
    key, ts, total, flow, battery, received = zip(*rows, strict=True)
    return WaterColumns(
        np.array(key, np.int32),
        _T0 + np.array(ts, np.int64),
        np.array(total, np.float64),
        np.array([np.nan if v is None else v for v in flow], np.float32),
        np.array([np.nan if v is None else v for v in battery], np.float32),
        _T0 + np.array(received, np.int64),
    )


def _same(a: WaterColumns, b: WaterColumns) -> None:
    np.testing.assert_array_equal(a.device_key, b.device_key)
    np.testing.assert_array_equal(a.ts_us, b.ts_us)
    # bit for bit, so -0.0 and 0.0 differ and NaN equals NaN
    np.testing.assert_array_equal(a.total_l.view(np.int64), b.total_l.view(np.int64))
    np.testing.assert_array_equal(a.flow_lpm.view(np.uint32), b.flow_lpm.view(np.uint32))
    np.testing.assert_array_equal(a.battery_v.view(np.uint32), b.battery_v.view(np.uint32))


@settings(max_examples=300, deadline=None)
@given(_readings())
def test_every_reading_comes_back_bit_for_bit(columns: WaterColumns) -> None:
    packed = encode_days(columns)
    back = decode_days(packed)
    order = np.lexsort((columns.ts_us, columns.device_key))
    _same(back, columns.take(order))
    assert sum(p.readings for p in packed) == len(columns)
    # one value per meter and UTC day, each holding only its own day
    assert len({(p.device_key, p.day_us) for p in packed}) == len(packed)
    for p in packed:
        day = decode_day(p.device_key, p.day_us, p.received_us, p.data)
        assert ((day.ts_us >= p.day_us) & (day.ts_us < p.day_us + DAY_US)).all()
        mine = columns.device_key == p.device_key
        assert p.received_us == int(
            columns.received_us[mine & (columns.ts_us // DAY_US == p.day_us // DAY_US)].max()
        )


def test_a_regular_meter_day_packs_small() -> None:
    n = 96
    columns = WaterColumns(
        np.full(n, 7, np.int32),
        _T0 + np.arange(n, dtype=np.int64) * 900_000_000 + 3_000_000,
        np.cumsum(np.where(np.arange(n) % 5 == 0, 123.4, 0.0)).round(1) + 1000.0,
        np.full(n, np.nan, np.float32),
        np.full(n, 3.61, np.float32),
        np.full(n, _T0, np.int64),
    )
    (packed,) = encode_days(columns)
    assert len(packed.data) < 2 * n  # under 2 bytes a reading before row overhead
    _same(decode_days([packed]), columns)


def test_two_readings_at_one_instant_are_refused() -> None:
    one = WaterColumns(
        np.array([1, 1], np.int32),
        np.array([_T0, _T0], np.int64),
        np.array([1.0, 2.0]),
        np.full(2, np.nan, np.float32),
        np.full(2, np.nan, np.float32),
        np.zeros(2, np.int64),
    )
    with pytest.raises(ValueError, match="same timestamp"):
        encode_days(one)


def test_sorted_unique_keeps_the_first_stored() -> None:
    cols = WaterColumns(
        np.array([2, 1, 2], np.int32),
        np.array([5, 9, 5], np.int64),
        np.array([10.0, 20.0, 99.0]),
        np.full(3, np.nan, np.float32),
        np.full(3, np.nan, np.float32),
        np.zeros(3, np.int64),
    )
    out = cols.sorted_unique()
    assert out.device_key.tolist() == [1, 2]
    assert out.total_l.tolist() == [20.0, 10.0]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:3], "header"),
        (lambda d: bytes([9]) + d[1:], "format 9"),
        (lambda d: d[:6] + b"garbage", "inflate"),
    ],
)
def test_a_damaged_value_is_a_clear_error(damage, message: str) -> None:  # type: ignore[no-untyped-def]
    (packed,) = encode_days(
        WaterColumns(
            np.array([1], np.int32),
            np.array([_T0], np.int64),
            np.array([1.5]),
            np.array([np.nan], np.float32),
            np.array([np.nan], np.float32),
            np.zeros(1, np.int64),
        )
    )
    with pytest.raises(CodecError, match=message):
        decode_day(1, packed.day_us, 0, damage(packed.data))
