"""Benchmarks that measure the targets the issues set, and the helpers they share.

`lovekey bench NAME` is in `cli.py`; each benchmark is a module of its own; `support/` holds
the pieces the benchmarks and the tests both use (a fake notification provider, an MQTT
publisher, the console served on a free port, registry seeding through `devices.registry`).
This is a top layer: it may import anything, and nothing in the product imports it.
"""
