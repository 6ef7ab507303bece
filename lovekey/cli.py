"""The `lovekey` command: one parser, subcommands contributed by each package.

Each module in `COMMAND_MODULES` has `add_commands(subparsers)`, which adds its subcommands
and sets `handler(args, settings) -> int` on them. Heavy imports happen inside handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from lovekey import __version__
from lovekey.config import load_settings
from lovekey.errors import LoveKeyError
from lovekey.logs import configure_logging

COMMAND_MODULES = (
    "lovekey.storage.cli",
    "lovekey.devices.cli",
    "lovekey.alerts.cli",
    "lovekey.ingest.cli",
    "lovekey.ingest.receive_cli",
    "lovekey.web.cli",
    "lovekey.simulator.cli",
    "lovekey.detectors.cli",
    "lovekey.evaluation.cli",
    "lovekey.run",
    "lovekey.demo",
    "lovekey.bench.cli",
)

log = logging.getLogger("lovekey")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lovekey",
        description="LoveKey: watch over elderly people who live alone.",
    )
    parser.add_argument("--version", action="version", version=f"lovekey {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (default: $LOVEKEY_CONFIG)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="json: one JSON object per line (default: text)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = {"log_level": args.log_level} if args.log_level else {}
        if args.log_format:
            overrides["log_format"] = args.log_format
        settings = load_settings(args.config, **overrides)
        configure_logging(settings.log_level, settings.log_format)
        code: int = args.handler(args, settings)
    except LoveKeyError as exc:
        print(f"lovekey: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
