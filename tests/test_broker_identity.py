"""Gateway identity at the broker (issue 16, finding 1): a private Mosquitto runs with the files
`lovekey broker-config` writes, against a real database and the real ingester.

A gateway publishes only with its own password and only under its own topics; the ingester's
user only reads; anonymous clients, wrong passwords and revoked gateways are refused; a
message over `mqtt.max_packet_bytes` is refused by the broker before anyone holds it.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from lovekey.bench.support.publisher import running_ingester, wait_for
from lovekey.bench.support.seeding import register_devices
from lovekey.cli import main
from lovekey.config import Settings
from lovekey.devices.credentials import (
    CredentialError,
    broker_files,
    hash_matches,
    issue_credential,
    mosquitto_hash,
)
from lovekey.storage import connect
from tests.fix_broker import PrivateBroker, probe

PREFIX = "lovekey"
INGEST_USER, INGEST_PASSWORD = "lovekey-ingest", "ingest-secret-for-tests"
NOT_AUTHORIZED = 135  # MQTT 5 reason code, in CONNACK and PUBACK
BAD_LOGIN = 134


@dataclass
class Site:
    db: str
    config: Path
    files: Path
    broker: PrivateBroker
    passwords: dict[str, str]

    def settings(self, make_settings: Callable[..., Settings], **mqtt: Any) -> Settings:
        return make_settings(
            database_url=self.db,
            mqtt_url=self.broker.url(INGEST_USER, INGEST_PASSWORD),
            mqtt={"topic_prefix": PREFIX, "client_id": "lk-ingest-test", "session_expiry_s": 0, **mqtt},
            ingest={"batch_ms": 50, "registry_miss_retry_s": 0, "summary_interval_s": 3600},
        )

    def cli(self, *args: str) -> int:
        return main(["--config", str(self.config), *args])


def issued_password(out: str) -> str:
    return out.strip().rsplit("password ", 1)[1]


@pytest.fixture
def site(postgres_factory: Any, private_broker: Any, tmp_path: Path, capsys: Any) -> Site:
    db = postgres_factory.create("brokerid")
    with connect(db) as conn:
        register_devices(
            conn,
            [
                ("WM-A1", "GW-A", "water_meter", "R-A"),
                ("SOS-A1", "GW-A", "sos_button", "R-A"),
                ("SOS-B1", "GW-B", "sos_button", "R-B"),
            ],
        )
    files = tmp_path / "broker-files"
    config = tmp_path / "lovekey.toml"
    # the port is not known before the broker starts; broker-config needs only the login
    config.write_text(
        f'database_url = "{db}"\n'
        f'mqtt_url = "mqtt://{INGEST_USER}:{INGEST_PASSWORD}@127.0.0.1:1"\n'
        f'[mqtt]\ntopic_prefix = "{PREFIX}"\nmax_packet_bytes = 65536\n'
    )
    passwords = {}
    for gateway in ("GW-A", "GW-B"):
        assert main(["--config", str(config), "gateways", "credentials", "issue", gateway]) == 0
        passwords[gateway] = issued_password(capsys.readouterr().out)
    assert main(["--config", str(config), "broker-config", "--out", str(files)]) == 0
    broker = private_broker(f"listener {{port}} 127.0.0.1\ninclude_dir {files}\n")
    return Site(db, config, files, broker, passwords)


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(statement).fetchall()  # type: ignore[arg-type]


NOW = datetime.now(UTC).replace(microsecond=0)


def reading(total_l: float, minutes_ago: int = 5) -> bytes:
    return orjson.dumps({"ts": (NOW - timedelta(minutes=minutes_ago)).isoformat(), "total_l": total_l})


def sos() -> bytes:
    return orjson.dumps({"ts": NOW.isoformat(), "type": "sos", "active": True})


def test_only_hashes_are_stored_and_they_are_mosquittos_own_format(site):
    [(stored,)] = query(site.db, "SELECT password_hash FROM gateway_credential WHERE gateway_id = 'GW-A'")
    assert site.passwords["GW-A"] not in stored
    assert hash_matches(site.passwords["GW-A"], stored)
    _, seven, iterations, salt, digest = stored.split("$")
    assert (seven, iterations, len(base64.b64decode(salt)), len(base64.b64decode(digest))) == (
        "7",
        "101",
        12,
        64,
    )
    expected = hashlib.pbkdf2_hmac("sha512", site.passwords["GW-A"].encode(), base64.b64decode(salt), 101, 64)
    assert base64.b64decode(digest) == expected
    passwd = (site.files / "passwd").read_text()
    assert f"GW-A:{stored}" in passwd.splitlines()
    assert site.passwords["GW-A"] not in passwd
    assert INGEST_PASSWORD not in passwd
    assert (site.files / "passwd").stat().st_mode & 0o777 == 0o640


def test_a_gateway_with_its_password_publishes_and_the_ingester_stores_it(site, make_settings):
    gateway = probe(site.broker.port, "GW-A", site.passwords["GW-A"])
    assert gateway.connack == 0
    # a shared subscription, as a city's ingesters run: the ACL's read grant covers $share/...
    with running_ingester(site.settings(make_settings), shared_group="lk") as ingester:
        assert gateway.publish(f"{PREFIX}/GW-A/WM-A1/reading", reading(1000.0)) == 0
        assert gateway.publish(f"{PREFIX}/GW-A/status", b"online") == 0
        wait_for(lambda: ingester.metrics.acked >= 2, timeout_s=10)
    gateway.close()
    assert query(site.db, "SELECT total_l FROM water_reading_wide") == [(1000.0,)]
    assert query(site.db, "SELECT online FROM gateway WHERE id = 'GW-A'") == [(True,)]


def test_a_gateway_cannot_speak_for_another_gateways_resident(site, make_settings):
    gateway_a = probe(site.broker.port, "GW-A", site.passwords["GW-A"])
    with running_ingester(site.settings(make_settings)) as ingester:
        # the attack of the issue: GW-A presses GW-B's resident's SOS button
        assert gateway_a.publish(f"{PREFIX}/GW-B/SOS-B1/event", sos()) == NOT_AUTHORIZED
        assert gateway_a.publish(f"{PREFIX}/GW-B/status", b"offline") == NOT_AUTHORIZED
        # nor anything outside the three topics of the contract, under its own id either
        assert gateway_a.publish(f"{PREFIX}/GW-A/SOS-A1/command", b"{}") == NOT_AUTHORIZED
        assert gateway_a.publish("elsewhere/topic", b"{}") == NOT_AUTHORIZED
        assert gateway_a.publish(f"{PREFIX}/GW-A/WM-A1/reading", reading(5.0)) == 0
        wait_for(lambda: ingester.metrics.acked >= 1, timeout_s=10)
        time.sleep(0.3)  # anything delivered would have come before the reading published after it
    gateway_a.close()
    assert ingester.metrics.acked == 1
    assert query(site.db, "SELECT count(*) FROM device_event") == [(0,)]
    assert query(site.db, "SELECT count(*) FROM rejected_input") == [(0,)]
    assert query(site.db, "SELECT online FROM gateway WHERE id = 'GW-B'") == [(None,)]


def test_wrong_passwords_strangers_and_anonymous_clients_are_refused(site):
    refusals = {
        "wrong password": probe(site.broker.port, "GW-A", "not-the-password"),
        "another gateway's password": probe(site.broker.port, "GW-A", site.passwords["GW-B"]),
        "unknown gateway": probe(site.broker.port, "GW-Z", site.passwords["GW-A"]),
        "anonymous": probe(site.broker.port, None, None),
        "anonymous, MQTT 3.1.1": probe(site.broker.port, None, None, mqtt5=False),
    }
    for name, client in refusals.items():
        assert client.connack is not None, name
        assert client.connack.is_failure, name
        client.close()
    assert refusals["wrong password"].connack in (BAD_LOGIN, NOT_AUTHORIZED)


def test_the_ingesters_user_reads_but_cannot_publish(site):
    watcher = probe(site.broker.port, "GW-B", site.passwords["GW-B"], subscribe=f"{PREFIX}/#")
    ingest_user = probe(site.broker.port, INGEST_USER, INGEST_PASSWORD, subscribe=f"{PREFIX}/#")
    assert ingest_user.connack == 0
    time.sleep(0.2)  # subscriptions in place
    assert ingest_user.publish(f"{PREFIX}/GW-A/WM-A1/reading", reading(1.0)) == NOT_AUTHORIZED
    assert ingest_user.publish(f"{PREFIX}/GW-B/SOS-B1/event", sos()) == NOT_AUTHORIZED
    gateway_a = probe(site.broker.port, "GW-A", site.passwords["GW-A"])
    assert gateway_a.publish(f"{PREFIX}/GW-A/WM-A1/reading", reading(2.0)) == 0
    wait_for(lambda: len(ingest_user.received) >= 1, timeout_s=5)
    time.sleep(0.2)
    assert [topic for topic, _ in ingest_user.received] == [f"{PREFIX}/GW-A/WM-A1/reading"]
    # a gateway reads nothing, not even its neighbours' readings
    assert watcher.received == []
    for client in (watcher, ingest_user, gateway_a):
        client.close()


def test_a_revoked_gateway_is_refused_once_the_files_are_rewritten_and_the_broker_reloads(site, capsys):
    still_connected = probe(site.broker.port, "GW-B", site.passwords["GW-B"])
    assert still_connected.connack == 0
    assert site.cli("gateways", "credentials", "revoke", "GW-B", "--out", str(site.files)) == 0
    assert "GW-B:" not in (site.files / "passwd").read_text()
    assert "user GW-B" not in (site.files / "acl").read_text()
    site.broker.reload()

    def refused() -> bool:
        client = probe(site.broker.port, "GW-B", site.passwords["GW-B"])
        client.close()
        return client.connack is not None and client.connack.is_failure

    wait_for(refused, timeout_s=5)
    # and the revoked gateway's open connection is closed by the broker at the reload (its
    # user is gone from the password file; its ACL block is gone as well)
    assert still_connected.disconnected.wait(5)
    assert still_connected.publish(f"{PREFIX}/GW-B/SOS-B1/event", sos(), timeout_s=0.5) is None
    still_connected.close()
    # the other gateway is untouched, and a re-issued credential works after the next reload
    gateway_a = probe(site.broker.port, "GW-A", site.passwords["GW-A"])
    assert gateway_a.connack == 0
    gateway_a.close()
    capsys.readouterr()
    assert site.cli("gateways", "credentials", "issue", "GW-B", "--out", str(site.files)) == 0
    new_password = issued_password(capsys.readouterr().out)
    assert new_password != site.passwords["GW-B"]
    site.broker.reload()
    wait_for(lambda: _connects(site.broker.port, "GW-B", new_password), timeout_s=5)
    assert not _connects(site.broker.port, "GW-B", site.passwords["GW-B"])


def _connects(port: int, user: str, password: str) -> bool:
    client = probe(port, user, password)
    client.close()
    return client.connack == 0


def test_a_message_over_max_packet_size_is_refused_by_the_broker(site, make_settings):
    peak_before_kb = site.broker.peak_rss_kb()
    with running_ingester(site.settings(make_settings)) as ingester:
        # MQTT 3.1.1: the client cannot have been told the limit, and sends 10 MB anyway
        big = probe(site.broker.port, "GW-A", site.passwords["GW-A"], mqtt5=False)
        assert big.connack == 0
        huge = b'{"ts": 1, "total_l": 1, "pad": "' + b"x" * 10_000_000 + b'"}'
        big.publish(f"{PREFIX}/GW-A/WM-A1/reading", huge, timeout_s=10)
        assert big.disconnected.wait(10), "the broker kept the connection of a 10 MB sender"
        big.close()
        small = probe(site.broker.port, "GW-A", site.passwords["GW-A"])
        assert small.publish(f"{PREFIX}/GW-A/WM-A1/reading", reading(7.0)) == 0
        wait_for(lambda: ingester.metrics.acked >= 1, timeout_s=10)
        small.close()
    assert ingester.metrics.acked == 1
    assert query(site.db, "SELECT total_l FROM water_reading_wide") == [(7.0,)]
    assert query(site.db, "SELECT count(*) FROM rejected_input") == [(0,)]
    # the broker read the packet's length and hung up: it never held the 10 MB either
    assert site.broker.peak_rss_kb() - peak_before_kb < 2_000


def test_issue_rotate_and_the_files_refuse_what_would_open_a_hole(site, capsys):
    with connect(site.db, autocommit=True) as conn:
        with pytest.raises(CredentialError, match="already has a credential"):
            issue_credential(conn, "GW-A")
        with pytest.raises(CredentialError, match="not in the registry"):
            issue_credential(conn, "GW-NOBODY")
        rotated = issue_credential(conn, "GW-A", rotate=True)
        assert rotated != site.passwords["GW-A"]
        [(rotated_at,)] = conn.execute(
            "SELECT rotated_at FROM gateway_credential WHERE gateway_id = 'GW-A'"
        ).fetchall()
        assert rotated_at is not None
    for bad in ("GW/A", "GW+", "GW#", "GW A", "GW:A", "", "GW\nuser x"):
        with pytest.raises(CredentialError):
            broker_files(
                {bad: mosquitto_hash("x")},
                ingest_user=INGEST_USER,
                ingest_password_hash=mosquitto_hash("y"),
                topic_prefix=PREFIX,
                max_packet_bytes=65536,
                directory_on_broker=Path("/etc/mosquitto/lovekey"),
            )
    with pytest.raises(CredentialError, match="also a gateway id"):
        broker_files(
            {INGEST_USER: mosquitto_hash("x")},
            ingest_user=INGEST_USER,
            ingest_password_hash=mosquitto_hash("y"),
            topic_prefix=PREFIX,
            max_packet_bytes=65536,
            directory_on_broker=Path("/etc/mosquitto/lovekey"),
        )
    # broker-config without the ingester's login in mqtt_url would lock the ingester out
    site.config.write_text(f'database_url = "{site.db}"\nmqtt_url = "mqtt://127.0.0.1:1"\n')
    capsys.readouterr()
    assert site.cli("broker-config", "--out", str(site.files)) == 1
    assert "ingester's broker user" in capsys.readouterr().err


def test_mosquitto_passwd_accepts_the_hash_format(tmp_path):
    """The format written by hand is the one mosquitto_passwd writes (checked by the broker above)."""
    passwd = tmp_path / "pw"
    result = subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "u", "p"], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.skip("mosquitto_passwd not available")
    theirs = passwd.read_text().strip().split(":", 1)[1]
    salt = base64.b64decode(theirs.split("$")[3])
    assert mosquitto_hash("p", salt=salt) == theirs
