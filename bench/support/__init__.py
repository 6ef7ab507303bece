"""What benchmarks and tests both use, kept out of the product's packages.

- `provider`: a fake SMS/push provider (`FakeProvider`) and the requests it received.
- `worker_process`: `lovekey alerts worker` as a subprocess (`WorkerProcess`), CPU time of a process.
- `publisher`: a capped QoS 1 MQTT `Publisher`, `wait_for`, `running_ingester`.
- `ingester_processes`: `lovekey ingest` as subprocesses for `bench ingest` (`IngesterProcess`,
  `Members` for a shared-subscription group), read through their metrics and /proc.
- `served_console`: the console served on a free port (`served_console`) with a `FakeClock`.
- `seeding`: residents and devices registered through `devices.registry.upsert_rows`.

Test-only fixtures and helpers are under `tests/` (`fix_*.py`, loaded as pytest plugins).
"""
