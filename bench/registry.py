"""`lovekey bench registry`: import a district registry (40,000 residents) and time it.

Runs in a scratch database created next to the configured one (or in the embedded server)
and dropped afterwards, so a real registry is never touched. Target: under 10 s.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import time

from lovekey.config import Settings
from lovekey.devices.csvfile import parse_registry
from lovekey.devices.model import REGISTRY_COLUMNS
from lovekey.devices.registry import apply_registry
from lovekey.storage import connect, database_url
from lovekey.storage.scratch import scratch_database

KINDS_PER_RESIDENT = ("water_meter", "smoke", "sos_button")


def district_csv(residents: int, seed: int = 1) -> str:
    """A full-form registry: communities of grids of buildings of units, three contacts each."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # the full form without resident_language (every resident takes the default)
    header = [column for column in REGISTRY_COLUMNS if column != "resident_language"]
    for n in (1, 2, 3):
        header += [f"contact{n}_role", f"contact{n}_name", f"contact{n}_phone"]
    writer.writerow(header)
    for i in range(residents):
        # 6 homes a unit, 4 units a building, 8 buildings a grid, 10 grids a community
        unit, building = i // 6, i // 24
        grid, community = building // 8, building // 80
        gateway = f"GW-{i // 250:05d}"
        contacts = [
            ("love_key_holder", f"Neighbour {i}", f"139{rng.randrange(10**8):08d}"),
            ("family", f"Child {i}", f"137{rng.randrange(10**8):08d}"),
            ("grid_worker", f"Grid worker {grid}", f"136{grid:08d}"),
        ]
        for k, kind in enumerate(KINDS_PER_RESIDENT):
            first = k == 0  # resident details and contacts on the first row only
            cells = {
                "device_id": f"{kind[:3].upper()}-{i:06d}",
                "gateway_id": gateway,
                "resident_id": f"R-{i:06d}",
                "kind": kind,
                "report_interval_s": "900" if kind == "water_meter" else "3600",
                "resident_name": f"Resident {i}" if first else "",
                "resident_phone": f"138{i:08d}" if first else "",
                "household_id": f"H-{i:06d}",
                "address": f"Building {building} unit {unit} room {i % 6 + 1}" if first else "",
                "community_id": f"C-{community:03d}",
                "community_name": f"Community {community}" if first else "",
                "grid_id": f"G-{grid:04d}",
                "grid_name": f"Grid {grid}" if first else "",
                "building_id": f"B-{building:05d}",
                "unit_id": f"U-{unit:05d}",
            }
            # by name, so a column added to the registry (empty here) cannot shift the others
            row = [cells.get(column, "") for column in header[: len(header) - 9]]
            for role, name, phone in contacts:
                row += [role, name, phone] if first else ["", "", ""]
            writer.writerow(row)
    return out.getvalue()


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="lovekey bench registry")
    parser.add_argument("--residents", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=2, help="import the same file again N-1 times")
    args = parser.parse_args(argv)

    text = district_csv(args.residents)
    with (
        database_url(settings) as url,
        scratch_database(url, "registry", storage=settings.storage) as scratch,
        connect(scratch, autocommit=True) as conn,
    ):
        for attempt in range(args.repeat):
            started = time.perf_counter()
            registry = parse_registry(text, name="district.csv")
            parsed = time.perf_counter()
            report = apply_registry(conn, registry)
            done = time.perf_counter()
            label = "first import" if attempt == 0 else "re-import  "
            print(
                f"{label}: {args.residents} residents, {len(registry.devices)} devices,"
                f" {len(registry.contacts)} contacts: parse {parsed - started:.2f} s,"
                f" write {done - parsed:.2f} s, total {done - started:.2f} s"
                f" ({report.summary().split(' (')[0]})"
            )
    return 0
