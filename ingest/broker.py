"""The broker for the embedded default: the configured one, else a local one we start.

With no `mqtt_url`, `broker_url(settings)` starts `mosquitto` when the binary is
installed (listening on a free loopback port, persistence under `data_dir/mosquitto`),
and otherwise the pure-Python amqtt broker inside this process. amqtt speaks only MQTT
3.1.1 and takes about 1,600 QoS 1 messages/s here: enough for a demo of a few hundred
homes, not for a district. Both are stopped when the block exits.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lovekey.config import Settings
from lovekey.errors import LoveKeyError

log = logging.getLogger(__name__)

# Debian and Ubuntu install the broker in sbin, which many users' PATH leaves out.
_SBIN = ("/usr/sbin", "/usr/local/sbin")
_START_TIMEOUT_S = 10.0


class BrokerError(LoveKeyError):
    """The local broker could not be started."""


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path=":".join(_SBIN))


@contextmanager
def broker_url(settings: Settings) -> Iterator[str]:
    """Yield the MQTT URL to use: the configured one, or that of a broker started here."""
    if settings.mqtt_url:
        yield settings.mqtt_url
        return
    binary = find_mosquitto()
    if binary:
        with start_mosquitto(binary, settings.data_dir / "mosquitto") as url:
            yield url
    else:
        log.warning("no mosquitto binary found: starting the amqtt broker in-process (demo scale)")
        with start_amqtt() as url:
            yield url


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# Queue limits matter: mosquitto's default keeps only 1,000 messages for a client that is
# away and drops the rest. Ours keeps everything for the session's lifetime.
_MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {directory}/
autosave_interval 60
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
log_dest file {directory}/mosquitto.log
log_type error
log_type warning
log_type notice
user {user}
"""


@contextmanager
def start_mosquitto(binary: str, directory: Path, *, port: int | None = None) -> Iterator[str]:
    """Run `mosquitto` on a free loopback port with its data in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = directory / "mosquitto.conf"
    config.write_text(
        _MOSQUITTO_CONF.format(port=port, directory=directory.resolve(), user=getpass.getuser())
    )
    log.info("starting mosquitto on 127.0.0.1:%d data=%s", port, directory)
    with subprocess.Popen(
        [binary, "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # its own session: Ctrl+C at a terminal signals the whole foreground group, and the
        # broker must outlive the clients that are still stopping; it is stopped last, below
        start_new_session=True,
    ) as process:
        try:
            _wait_for_port(port, lambda: process.poll() is None)
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise BrokerError(f"mosquitto exited with {process.returncode}: {stderr.strip()}")
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def start_amqtt(*, port: int | None = None) -> Iterator[str]:
    """Run the amqtt broker on its own event loop in a thread of this process (MQTT 3.1.1)."""
    from amqtt.broker import Broker

    port = port or free_port()
    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        # anonymous on loopback, as mosquitto above; no $SYS topics, no packet logging
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="amqtt-broker", daemon=True)
    thread.start()

    async def start() -> Broker:
        broker = Broker(config)  # built on its own loop: it makes futures in __init__
        await broker.start()
        return broker

    try:
        broker = asyncio.run_coroutine_threadsafe(start(), loop).result(_START_TIMEOUT_S)
        log.info("amqtt broker on 127.0.0.1:%d", port)
        try:
            yield f"mqtt://127.0.0.1:{port}?protocol=3.1.1"
        finally:
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(_START_TIMEOUT_S)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _wait_for_port(port: int, alive: Any) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    if alive():
        raise BrokerError(f"broker did not listen on 127.0.0.1:{port} in {_START_TIMEOUT_S:g}s")
