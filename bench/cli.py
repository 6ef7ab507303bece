"""`lovekey bench NAME`: benchmarks that measure the targets the issues set; `lovekey chaos`.

Each benchmark is `module:function` taking `(argv, settings) -> int` and parsing its own
options; they are imported only when run.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from lovekey.config import Settings

BENCHMARKS: dict[str, tuple[str, str]] = {
    # name: (module:function, one-line description)
    "registry": ("lovekey.bench.registry:main", "import a district registry (40,000 residents)"),
    "ingest": ("lovekey.bench.ingest:main", "MQTT readings into the database: rows/s, latency, memory"),
    "console": (
        "lovekey.bench.console:main",
        "console pages p95 over a district of readings (40,000 residents)",
    ),
    "simulate": ("lovekey.bench.simulate:main", "simulate a district: readings/s, memory, publish msg/s"),
    "detect": ("lovekey.bench.detect:main", "detector sweep and update, 1e6 meters; district memory"),
    "alerts": ("lovekey.bench.alerts:main", "1,000 simultaneous alerts: commit to first provider request"),
    "phones": (
        "lovekey.bench.phones:main",
        "1,000 simultaneous alerts by template SMS/voice through the providers' SDKs",
    ),
}


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark and report its figures")
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options for that benchmark")
    p.set_defaults(handler=_bench)
    # not a benchmark (it measures nothing, it asserts): a command of its own
    c = subparsers.add_parser(
        "chaos", help="kill and restart LoveKey's processes and servers; count what was lost or doubled"
    )
    c.add_argument("--trials", type=int, default=20, help="faults per scenario (default 20)")
    c.add_argument(
        "--scenario",
        action="append",
        choices=["ingest", "detect", "worker", "restarts"],
        help="run only this scenario (repeatable; default all)",
    )
    c.add_argument("--seed", type=int, help="random seed, to repeat a run")
    c.add_argument(
        "--admin-url",
        metavar="URL",
        help="PostgreSQL server for scratch databases (default: database_url, else 127.0.0.1:5432)",
    )
    c.set_defaults(handler=_chaos)


def _chaos(args: argparse.Namespace, settings: Settings) -> int:
    from lovekey.bench.chaos import main

    return main(args, settings)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    target, _ = BENCHMARKS[args.name]
    module, function = target.split(":")
    run = getattr(importlib.import_module(module), function)
    code: int = run(args.options, settings)
    return code
