"""Publishing a whole simulated world, in one process or several.

`Job` says what to send (a scenario, a seed, a shard of its gateways) and is picklable, so a
spawned process can rebuild the same world and send its part through its own
`BrokerPublisher` (`simulator/publish.py`). `publish_world` runs one job in this process or
splits it by gateway over several, each with its own client, and sums their progress from
shared counters. One Python process with paho sends some 20,000 QoS 1 messages/s; a second
process on the second core is how a load test gets past that.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from lovekey.errors import PublishError
from lovekey.ingest.mqtt import TlsFiles
from lovekey.simulator.publish import (
    DEFAULT_LANES,
    BrokerPublisher,
    Pacing,
    PublishStats,
    publish_batches,
)
from lovekey.simulator.scenario import Scenario
from lovekey.simulator.world import World


@dataclass(frozen=True)
class Job:
    """What a publishing process needs to rebuild the world and send its shard (picklable)."""

    scenario: Scenario
    residents: int
    seed: int
    start: datetime
    days: float
    mqtt_url: str
    topic_prefix: str
    max_inflight: int
    pacing: Pacing
    shard: tuple[int, int] = (0, 1)
    client_id: str = ""
    lanes: int = DEFAULT_LANES
    tls_files: TlsFiles | None = None  # for mqtts:// (mqtt.ca_file, cert_file, key_file)
    door_share: float = 0.0  # households with a door reminder (World.build)

    def world(self) -> World:
        return World.build(
            self.scenario,
            residents=self.residents,
            seed=self.seed,
            start=self.start,
            days=self.days,
            door_share=self.door_share,
        )

    def run(self, on_progress: Callable[[PublishStats], None] | None = None) -> PublishStats:
        world = self.world()
        client_id = self.client_id or None
        with BrokerPublisher(
            self.mqtt_url,
            client_id=client_id,
            max_inflight=self.max_inflight,
            lanes=self.lanes,
            tls_files=self.tls_files,
        ) as publisher:
            return publish_batches(
                world.message_batches(shard=self.shard),
                publisher,
                topic_prefix=self.topic_prefix,
                pacing=self.pacing,
                on_progress=on_progress,
            )


@dataclass(frozen=True, slots=True)
class Progress:
    """Totals over all publishing processes."""

    published: int
    acked: int
    simulated_ts: float  # the earliest of the processes' simulated clocks
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.published / max(self.elapsed_s, 1e-9)


def publish_world(
    job: Job,
    *,
    processes: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """Publish `job`'s world, split by gateway over `processes` processes (each one client).

    One Python process with paho sends some 20,000 QoS 1 messages/s on this kind of
    machine; a second process on the second core is how a load test gets past that.
    """
    started = time.monotonic()
    if processes == 1:

        def report(stats: PublishStats) -> None:
            if on_progress is not None:
                on_progress(
                    Progress(stats.published, stats.acked, stats.simulated_ts, time.monotonic() - started)
                )

        stats = job.run(report)
        return Progress(stats.published, stats.acked, stats.simulated_ts, time.monotonic() - started)
    return _publish_in_processes(job, processes, on_progress, started)


def _publish_in_processes(
    job: Job, processes: int, on_progress: Callable[[Progress], None] | None, started: float
) -> Progress:
    context = multiprocessing.get_context("spawn")
    counters = context.Array("d", 3 * processes, lock=False)  # published, acked, sim ts
    errors = context.Queue(maxsize=processes)
    rate = None if job.pacing.max_rate is None else job.pacing.max_rate / processes
    base_id = job.client_id or f"lovekey-sim-{uuid.uuid4().hex[:8]}"
    workers = []
    for k in range(processes):
        part = replace(
            job, shard=(k, processes), client_id=f"{base_id}-{k}", pacing=replace(job.pacing, max_rate=rate)
        )
        worker = context.Process(
            target=_work, args=(part, counters, k, errors), name=f"lovekey-sim-{k}", daemon=True
        )
        worker.start()
        workers.append(worker)

    def totals() -> Progress:
        values = list(counters)
        clocks = [values[3 * k + 2] for k in range(processes) if values[3 * k + 2] > 0]
        return Progress(
            int(sum(values[0::3])),
            int(sum(values[1::3])),
            min(clocks) if clocks else 0.0,
            time.monotonic() - started,
        )

    try:
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(timeout=0.25 / processes)
            if on_progress is not None:
                on_progress(totals())
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join()
    problems = []
    while not errors.empty():
        problems.append(errors.get_nowait())
    failed = [w.name for w in workers if w.exitcode != 0]
    if problems or failed:
        raise PublishError("; ".join(problems) or f"publishing processes failed: {', '.join(failed)}")
    result = totals()
    if on_progress is not None:
        on_progress(result)
    return result


def _work(job: Job, counters: Any, slot: int, errors: Any) -> None:
    """A publishing process: its shard, its own client; counters for the parent's progress."""

    def report(stats: PublishStats) -> None:
        counters[3 * slot] = stats.published
        counters[3 * slot + 1] = stats.acked
        counters[3 * slot + 2] = stats.simulated_ts

    try:
        job.run(report)
    except BaseException as exc:  # the parent reports it; the exit code says it failed
        errors.put(f"shard {slot}: {exc}")
        raise SystemExit(1) from exc
