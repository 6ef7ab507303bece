"""`lovekey bench simulate`: how fast the simulator generates and publishes a district.

1. Generation into a null sink: 40,000 residents for 7 days with every meter reporting
   every 15 minutes (26.9 million readings), through the public `World.messages()`, in a
   fresh process so that its peak memory is its own. Targets: >= 200,000 readings/s and
   under 1 GB.
2. Publishing to the configured broker (`mqtt_url`) under a topic prefix nobody listens to:
   messages/s with QoS 1, every PUBACK waited for. Target: >= 30,000 messages/s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from lovekey.config import Settings

TARGET_READINGS_PER_S = 200_000
TARGET_PEAK_MB = 1024
TARGET_MESSAGES_PER_S = 30_000


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(
        prog="lovekey bench simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--residents", type=int, default=40_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--publish-residents", type=int, default=40_000)
    parser.add_argument(
        "--publish-hours",
        type=float,
        default=6.0,
        help="simulated hours to publish (6 h of a district: 1.1 million messages)",
    )
    parser.add_argument(
        "--processes", default="1,2", help="publishing processes to try, comma separated (default 1,2)"
    )
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--skip-publish", action="store_true")
    args = parser.parse_args(argv)
    ok = True
    if not args.skip_generate:
        ok &= _generate(args)
    if not args.skip_publish:
        if not settings.mqtt_url:
            print("publish: skipped, no broker configured (set LOVEKEY_MQTT_URL)")
        else:
            for processes in (int(p) for p in args.processes.split(",")):
                ok &= _publish(args, settings, processes)
    return 0 if ok else 1


def _scenario() -> Any:
    from lovekey.simulator import Scenario

    return Scenario.load(None).with_overrides({"meters": {"mode_share": {"quarter_hour": 1.0}}})


def _generate(args: argparse.Namespace) -> bool:
    print(
        f"generate: {args.residents:,} residents x {args.days:g} days, 15-minute reporting,"
        " into a null sink (a fresh process)"
    )
    context = multiprocessing.get_context("spawn")
    results = context.Queue(maxsize=1)
    worker = context.Process(target=_null_sink, args=(args.residents, args.days, args.seed, results))
    worker.start()
    worker.join()
    if worker.exitcode != 0:
        print(f"generate: FAILED (exit code {worker.exitcode})")
        return False
    r = results.get()
    rate = r["readings"] / r["elapsed_s"]
    print(
        f"  build {r['build_s']:.2f} s; {r['messages']:,} messages holding {r['readings']:,}"
        f" readings in {r['elapsed_s']:.1f} s"
    )
    print(
        f"  {rate:,.0f} readings/s ({r['messages'] / r['elapsed_s']:,.0f} messages/s),"
        f" peak memory {r['peak_mb']:.0f} MB"
    )
    good = bool(rate >= TARGET_READINGS_PER_S and r["peak_mb"] < TARGET_PEAK_MB)
    print(
        f"  targets >= {TARGET_READINGS_PER_S:,} readings/s and < {TARGET_PEAK_MB} MB:"
        f" {'met' if good else 'NOT MET'}"
    )
    return good


def _null_sink(residents: int, days: float, seed: int, results: Any) -> None:
    from lovekey.simulator import World
    from lovekey.simulator.incidents import LOCAL

    start = datetime(2024, 5, 6, tzinfo=LOCAL)
    began = time.perf_counter()
    world = World.build(_scenario(), residents=residents, seed=seed, start=start, days=days)
    built = time.perf_counter()
    messages = readings = 0
    for message in world.messages():
        messages += 1
        readings += message.payload.count(b'"total_')
    done = time.perf_counter()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results.put(
        {
            "build_s": built - began,
            "elapsed_s": done - built,
            "messages": messages,
            "readings": readings,
            "peak_mb": peak_kb / 1024,
        }
    )


def _publish(args: argparse.Namespace, settings: Settings, processes: int) -> bool:
    from lovekey.bench.support.publisher import Publisher
    from lovekey.simulator import World
    from lovekey.simulator.incidents import LOCAL
    from lovekey.simulator.publish import Pacing
    from lovekey.simulator.publish_world import Job, publish_world

    prefix = f"lkbench/{uuid.uuid4().hex[:12]}"
    days = args.publish_hours / 24
    start = (datetime.now(LOCAL) - timedelta(days=days)).replace(second=0, microsecond=0)
    assert settings.mqtt_url is not None
    job = Job(
        scenario=_scenario(),
        residents=args.publish_residents,
        seed=args.seed,
        start=start,
        days=days,
        mqtt_url=settings.mqtt_url,
        topic_prefix=prefix,
        max_inflight=1000,
        pacing=Pacing(),
    )
    print(
        f"publish: {args.publish_residents:,} residents x {args.publish_hours:g} h to"
        f" {prefix}/..., QoS 1, {processes} process(es)"
    )
    result = publish_world(job, processes=processes)
    rate = result.published / result.elapsed_s
    print(
        f"  {result.published:,} messages, all acknowledged, in {result.elapsed_s:.1f} s:"
        f" {rate:,.0f} messages/s (includes starting the processes)"
    )
    good = rate >= TARGET_MESSAGES_PER_S
    print(f"  target >= {TARGET_MESSAGES_PER_S:,} messages/s: {'met' if good else 'NOT MET'}")
    world = World.build(job.scenario, residents=job.residents, seed=job.seed, start=start, days=days)
    with Publisher(settings.mqtt_url) as cleanup:  # the gateways' retained status messages
        for gateway in world.population.gateway_ids:
            cleanup.publish(f"{prefix}/{gateway}/status", b"", retain=True)
    return good
