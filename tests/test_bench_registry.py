"""The benchmarks' generated district registry stays a file the registry accepts."""

from __future__ import annotations

from lovekey.bench.registry import KINDS_PER_RESIDENT, district_csv
from lovekey.devices.csvfile import parse_registry


def test_the_benchmark_district_file_parses_whole() -> None:
    registry = parse_registry(district_csv(30), name="district.csv")  # raises on any problem
    assert len(registry.devices) == 30 * len(KINDS_PER_RESIDENT)
    assert len({d.resident_id for d in registry.devices}) == 30
    assert all(d.external_id is None for d in registry.devices)
