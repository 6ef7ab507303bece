"""`lovekey bench NAME`: benchmarks that measure the targets the issues set.

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
}


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark and report its figures")
    p.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options for that benchmark")
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    target, _ = BENCHMARKS[args.name]
    module, function = target.split(":")
    run = getattr(importlib.import_module(module), function)
    code: int = run(args.options, settings)
    return code
