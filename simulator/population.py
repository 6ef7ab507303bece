"""Who lives where, with which devices and contacts: the district a scenario describes.

Residents fill buildings in order (a building per gateway: one LoRa/M-Bus concentrator or
NB-IoT bridge per building), buildings fill grids, grids fill communities. Everything is
drawn from `simulator.rand` by index, so resident 7 of seed 1 is the same person whether
the district has 10 residents or 40,000.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from lovekey.devices.model import REGISTRY_COLUMNS
from lovekey.simulator import rand
from lovekey.simulator.door import DoorModel
from lovekey.simulator.names import mobiles, people, younger_people
from lovekey.simulator.scenario import REPORTING_MODES, Scenario
from lovekey.vocabulary import DeviceKind

I32 = npt.NDArray[np.int32]
BOOL = npt.NDArray[np.bool_]

# Device kinds as in docs/registry.md, with the prefix of their ids. `Population.device_kind`
# stores indexes into this tuple, so its order is part of the seeded output.
DEVICE_KINDS: tuple[DeviceKind, ...] = (
    DeviceKind.WATER_METER,
    DeviceKind.SMOKE,
    DeviceKind.GAS,
    DeviceKind.SOS_BUTTON,
    DeviceKind.AWAY_BUTTON,
    DeviceKind.DOOR_SENSOR,
)
WATER_METER, SMOKE, GAS, SOS_BUTTON, AWAY_BUTTON, DOOR_SENSOR = range(6)
_PREFIX = ("WM", "SM", "GS", "SOS", "AW", "DR")

# Expected seconds between messages, for the registry's report_interval_s (meter_silent).
MODE_INTERVAL_S = {
    "minute": 60,
    "quarter_hour": 900,
    "hourly_batch": 3600,
    "four_daily": 6 * 3600,
    "daily": 86400,
}

# Dadong district streets and neighbourhoods, for community names.
_COMMUNITIES = (
    "大东",
    "小北",
    "东塔",
    "津桥",
    "上园",
    "二台子",
    "新东",
    "长安",
    "万泉",
    "前进",
    "文官",
    "天后宫",
    "辽沈",
    "东站",
    "北海",
    "合作",
    "滂江",
    "望花",
    "东新",
    "联合",
    "洮昌",
    "草仓",
    "大什字",
    "东贸",
)


def _ranged_int(seed: int, stream: str, index: npt.ArrayLike, span: tuple[float, float]) -> I32:
    low, high = int(span[0]), int(span[1])
    u = rand.uniform(seed, stream, index)
    return (low + np.floor(u * (high - low + 1))).astype(np.int32)


@dataclass(frozen=True, slots=True)
class DrawnPlace:
    """A drawn community, grid or building: its id, name and its parent's index (not its id)."""

    id: str
    name: str
    parent: int


@dataclass(frozen=True)
class Population:
    """Residents (index = resident number), their places and their devices, as arrays."""

    seed: int
    residents: int
    communities: tuple[DrawnPlace, ...]
    grids: tuple[DrawnPlace, ...]
    buildings: tuple[DrawnPlace, ...]
    resident_building: I32
    resident_unit: I32  # unit number within the building, from 1
    resident_floor: I32
    resident_door: I32
    profile: I32
    # devices, in registry order: each resident's meter first, then the resident's others
    device_kind: I32
    device_resident: I32
    meter_device: I32  # device index of resident i's water meter
    meter_mode: I32  # index into REPORTING_MODES, per resident
    staff_count: I32  # community staff per community (1 or 2)

    @property
    def gateway_count(self) -> int:
        return len(self.buildings)

    @cached_property
    def resident_ids(self) -> list[str]:
        return [f"R-{i:06d}" for i in range(self.residents)]

    @cached_property
    def gateway_ids(self) -> list[str]:
        return [f"GW-{b:05d}" for b in range(len(self.buildings))]

    @cached_property
    def device_ids(self) -> list[str]:
        prefixes = [_PREFIX[k] for k in self.device_kind.tolist()]
        return [f"{p}-{r:06d}" for p, r in zip(prefixes, self.device_resident.tolist(), strict=True)]

    @cached_property
    def device_gateway(self) -> I32:
        return self.resident_building[self.device_resident]

    def devices_of(self, resident: int) -> dict[int, int]:
        """kind -> device index for one resident."""
        lo = int(self.meter_device[resident])
        hi = int(self.meter_device[resident + 1]) if resident + 1 < self.residents else len(self.device_kind)
        return {int(self.device_kind[d]): d for d in range(lo, hi)}

    def has_device(self, kind: int) -> BOOL:
        """Per resident: whether the resident has a device of this kind."""
        out = np.zeros(self.residents, dtype=np.bool_)
        out[self.device_resident[self.device_kind == kind]] = True
        return out

    # -- names and phones, drawn by index ---------------------------------------------------

    def resident_name(self, i: int) -> str:
        return people(self.seed, "resident", [i], women_share=0.7)[0]

    def phone(self, stream: str, i: int) -> str:
        return mobiles(self.seed, stream, [i])[0]

    def address(self, i: int) -> str:
        b = int(self.resident_building[i])
        building = self.buildings[b]
        community = self.communities[self.grids[building.parent].parent]
        return (
            f"沈阳市大东区{community.name}{building.name}{int(self.resident_unit[i])}单元"
            f"{int(self.resident_floor[i])}0{int(self.resident_door[i])}室"
        )


def build_population(
    scenario: Scenario, *, residents: int, seed: int, door: DoorModel | None = None
) -> Population:
    """`door`: who has a door reminder (`DoorModel.has_reminder`, so a simulated world and
    `lovekey evaluate` give one to the same households); None: nobody."""
    if residents < 1:
        raise ValueError("a district needs at least one resident")
    pop = scenario.population
    index = np.arange(residents, dtype=np.int64)

    # Buildings in order until every resident has one; then grids, then communities.
    building_size: list[int] = []
    while sum(building_size) < residents:
        b = len(building_size)
        building_size.append(int(_ranged_int(seed, "building.size", [b], pop.residents_per_building)[0]))
    building_size[-1] -= sum(building_size) - residents
    building_of = np.repeat(np.arange(len(building_size), dtype=np.int32), building_size)
    start_of = np.concatenate([[0], np.cumsum(building_size)[:-1]]).astype(np.int64)
    position = index - start_of[building_of]

    grid_of_building = _fill(seed, "grid.size", len(building_size), pop.buildings_per_grid)
    community_of_grid = _fill(seed, "community.size", int(grid_of_building[-1]) + 1, pop.grids_per_community)
    communities = tuple(
        DrawnPlace(
            f"C{c:03d}",
            f"{_COMMUNITIES[c % len(_COMMUNITIES)]}"
            f"{'' if c < len(_COMMUNITIES) else c // len(_COMMUNITIES) + 1}社区",
            -1,
        )
        for c in range(int(community_of_grid[-1]) + 1)
    )
    grids, grid_number = [], np.zeros(len(communities), dtype=np.int32)
    for c in community_of_grid.tolist():
        grid_number[c] += 1
        grids.append(DrawnPlace(f"C{c:03d}-G{grid_number[c]:02d}", f"第{grid_number[c]}网格", c))
    # buildings are numbered through the community (their names are the street numbers)
    buildings, building_number = [], np.zeros(len(grids), dtype=np.int32)
    community_number = np.zeros(len(communities), dtype=np.int32)
    for g in grid_of_building.tolist():
        building_number[g] += 1
        community_number[grids[g].parent] += 1
        number = int(community_number[grids[g].parent])
        buildings.append(DrawnPlace(f"{grids[g].id}-B{building_number[g]:02d}", f"{number}号楼", g))

    units = _ranged_int(seed, "building.units", np.arange(len(buildings)), pop.units_per_building)
    floors = _ranged_int(seed, "building.floors", np.arange(len(buildings)), pop.floors_per_building)
    unit_count = units[building_of].astype(np.int64)
    floor_count = floors[building_of].astype(np.int64)
    in_unit = position // unit_count
    resident_unit = (position % unit_count + 1).astype(np.int32)
    resident_floor = (in_unit % floor_count + 1).astype(np.int32)
    resident_door = (in_unit // floor_count + 1).astype(np.int32)

    profiles = scenario.profile
    profile = rand.choice(seed, "resident.profile", index, [p.share for p in profiles]).astype(np.int32)

    has = np.ones((residents, len(DEVICE_KINDS)), dtype=np.bool_)
    for kind, share in (
        (SMOKE, pop.smoke_share),
        (GAS, pop.gas_share),
        (SOS_BUTTON, pop.sos_share),
        (AWAY_BUTTON, pop.away_share),
    ):
        has[:, kind] = rand.uniform(seed, f"device.{DEVICE_KINDS[kind]}", index) < share
    has[:, DOOR_SENSOR] = False
    if door is not None and door.share > 0:
        has[:, DOOR_SENSOR] = [door.has_reminder(f"R-{i:06d}") for i in range(residents)]
    counts = has.sum(axis=1)
    device_resident = np.repeat(index.astype(np.int32), counts)
    device_kind = np.nonzero(has)[1].astype(np.int32)  # row-major: per resident, kinds in order
    meter_device = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)

    shares = scenario.meters.mode_share
    weights = [shares.get(mode, 0.0) for mode in REPORTING_MODES]
    meter_mode = rand.choice(seed, "meter.mode", index, weights).astype(np.int32)
    staff = (
        rand.uniform(seed, "community.staff", np.arange(len(communities))) < pop.second_staff_share
    ).astype(np.int32) + 1

    return Population(
        seed=seed,
        residents=residents,
        communities=communities,
        grids=tuple(grids),
        buildings=tuple(buildings),
        resident_building=building_of,
        resident_unit=resident_unit,
        resident_floor=resident_floor,
        resident_door=resident_door,
        profile=profile,
        device_kind=device_kind,
        device_resident=device_resident,
        meter_device=meter_device,
        meter_mode=meter_mode,
        staff_count=staff,
    )


def _fill(seed: int, stream: str, items: int, size: tuple[float, float]) -> I32:
    """Parent index of each of `items` children, parents taking a drawn number each."""
    out = np.empty(items, dtype=np.int32)
    done, parent = 0, 0
    while done < items:
        take = int(_ranged_int(seed, stream, [parent], size)[0])
        out[done : done + take] = parent
        done += take
        parent += 1
    return out


# -- the registry file --------------------------------------------------------------------

MAX_CONTACTS = 6  # two love-key holders, family, grid worker, two community staff
CONTACT_COLUMNS = tuple(
    f"contact{n}_{field}" for n in range(1, MAX_CONTACTS + 1) for field in ("role", "name", "phone")
)


def registry_rows(population: Population, scenario: Scenario) -> list[dict[str, str]]:
    """The full-form rows of docs/registry.md: one per device, contacts on the meter's row."""
    pop = scenario.population
    seed = population.seed
    n = population.residents
    index = np.arange(n)
    second_key = (rand.uniform(seed, "contact.second_key", index) < pop.second_key_holder_share).tolist()
    family = (rand.uniform(seed, "contact.family", index) < pop.family_share).tolist()
    own_phone = (rand.uniform(seed, "resident.phone", index) < pop.resident_phone_share).tolist()
    sensor_interval = {
        SMOKE: str(scenario.sensors.smoke_interval_s),
        GAS: str(scenario.sensors.gas_interval_s),
    }
    device_ids = population.device_ids
    gateway_ids = population.gateway_ids
    names = people(seed, "resident", index, women_share=0.7)
    phones = mobiles(seed, "resident", index)
    key1 = list(zip(people(seed, "key1", index, women_share=0.5), mobiles(seed, "key1", index), strict=True))
    key2 = list(zip(people(seed, "key2", index, women_share=0.5), mobiles(seed, "key2", index), strict=True))
    kin = list(zip(younger_people(seed, "family", index), mobiles(seed, "family", index), strict=True))
    grid_index = np.arange(len(population.grids))
    workers = list(
        zip(
            younger_people(seed, "grid_worker", grid_index),
            mobiles(seed, "grid_worker", grid_index),
            strict=True,
        )
    )
    staff_index = np.arange(2 * len(population.communities))
    staff = list(
        zip(younger_people(seed, "staff", staff_index), mobiles(seed, "staff", staff_index), strict=True)
    )
    rows: list[dict[str, str]] = []
    blank_contacts = dict.fromkeys(CONTACT_COLUMNS, "")
    for i in range(n):
        b = int(population.resident_building[i])
        building = population.buildings[b]
        grid = population.grids[building.parent]
        community_index = grid.parent
        community = population.communities[community_index]
        resident_id = population.resident_ids[i]
        unit_number = int(population.resident_unit[i])
        base = {
            "gateway_id": gateway_ids[b],
            "resident_id": resident_id,
            "resident_name": names[i],
            "resident_phone": phones[i] if own_phone[i] else "",
            "resident_language": "zh",
            "household_id": f"H-{i:06d}",
            "address": population.address(i),
            "community_id": community.id,
            "community_name": community.name,
            "grid_id": grid.id,
            "grid_name": grid.name,
            "building_id": building.id,
            "building_name": building.name,
            "unit_id": f"{building.id}-U{unit_number}",
            "unit_name": f"{unit_number}单元",
        }
        contacts = [("love_key_holder", *key1[i])]
        if second_key[i]:
            contacts.append(("love_key_holder", *key2[i]))
        if family[i]:
            contacts.append(("family", *kin[i]))
        contacts.append(("grid_worker", *workers[building.parent]))
        for s in range(int(population.staff_count[community_index])):
            contacts.append(("community_staff", *staff[community_index * 2 + s]))
        for kind, d in population.devices_of(i).items():
            if kind == WATER_METER:
                mode = REPORTING_MODES[int(population.meter_mode[i])]
                interval = str(MODE_INTERVAL_S[mode])
            else:
                interval = sensor_interval.get(kind, "")
            row = {
                "device_id": device_ids[d],
                "kind": DEVICE_KINDS[kind],
                "report_interval_s": interval,
                "external_id": "",  # the simulator speaks LoveKey's own contract
                **base,
                **blank_contacts,
            }
            if kind == WATER_METER:
                for n_contact, (role, name, phone) in enumerate(contacts, start=1):
                    row[f"contact{n_contact}_role"] = role
                    row[f"contact{n_contact}_name"] = name
                    row[f"contact{n_contact}_phone"] = phone
            rows.append({column: row[column] for column in REGISTRY_COLUMNS + CONTACT_COLUMNS})
    return rows
