"""`mqtts://` with a private CA and client certificates (issue 16, finding 9): the ingester and
the simulator's publisher connect to a private Mosquitto TLS listener that demands a client
certificate, and the log line naming the broker says `mqtts://` with the password hidden.

Certificates are made for each test with `openssl` in a temporary directory.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from lovekey.bench.support.publisher import running_ingester, wait_for
from lovekey.bench.support.seeding import register_devices
from lovekey.errors import PublishError, SettingsError
from lovekey.ingest.mqtt import BrokerAddress, TlsFiles
from lovekey.simulator.publish import BrokerPublisher
from lovekey.storage import connect


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """ca.pem, server.pem/.key (for 127.0.0.1) and client.pem/.key, all signed by the CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path / "pki"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=LoveKey test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)  # fmt: skip
    return d


@pytest.fixture
def tls_broker(private_broker: Any, pki: Path) -> Any:
    return private_broker(
        "listener {port} 127.0.0.1\n"
        f"cafile {pki}/ca.pem\ncertfile {pki}/server.pem\nkeyfile {pki}/server.key\n"
        "require_certificate true\nallow_anonymous true\n"
    )


def test_the_ingester_and_the_simulator_speak_mqtts_with_a_private_ca_and_client_certificates(
    postgres_factory: Any, make_settings: Any, tls_broker: Any, pki: Path, caplog: Any
):
    db = postgres_factory.create("tls")
    with connect(db) as conn:
        register_devices(conn, [("WM-1", "GW-1", "water_meter", "R-1")])
    url = f"mqtts://lovekey-ingest:tls-secret@127.0.0.1:{tls_broker.port}"
    settings = make_settings(
        database_url=db,
        mqtt_url=url,
        mqtt={
            "topic_prefix": "lovekey",
            "client_id": "lk-tls-ingest",
            "session_expiry_s": 0,
            "ca_file": str(pki / "ca.pem"),
            "cert_file": str(pki / "client.pem"),
            "key_file": str(pki / "client.key"),
        },
        ingest={"batch_ms": 50, "summary_interval_s": 3600},
    )
    files = TlsFiles.from_settings(settings.mqtt)
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    caplog.set_level(logging.INFO, logger="lovekey")
    with running_ingester(settings) as ingester:
        with BrokerPublisher(url, client_id="lk-tls-sim", tls_files=files) as publisher:
            publisher.publish("lovekey/GW-1/WM-1/reading", orjson.dumps({"ts": ts, "total_l": 42.0}))
        wait_for(lambda: ingester.metrics.acked >= 1, timeout_s=10)
    with connect(db) as conn:
        assert conn.execute("SELECT total_l FROM water_reading_wide").fetchall() == [(42.0,)]
    lines = [r.getMessage() for r in caplog.records if "connecting to" in r.getMessage()]
    assert any(f"mqtts://lovekey-ingest:***@127.0.0.1:{tls_broker.port}" in line for line in lines), lines
    assert "tls-secret" not in caplog.text


def test_a_client_without_a_certificate_is_refused_by_the_tls_listener(tls_broker: Any, pki: Path):
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    publisher = BrokerPublisher(url, client_id="lk-tls-nocert", tls_files=TlsFiles(ca_file=pki / "ca.pem"))
    with pytest.raises(PublishError, match="closed the connection"):  # no client certificate
        publisher.__enter__()


def test_tls_files_with_a_plain_url_or_a_key_without_its_certificate_are_refused_at_once(pki: Path):
    with pytest.raises(SettingsError, match="mqtt://"):
        BrokerAddress.parse("mqtt://127.0.0.1:1883", TlsFiles(ca_file=pki / "ca.pem"))
    with pytest.raises(SettingsError, match="cert_file"):
        BrokerAddress.parse("mqtts://127.0.0.1", TlsFiles(key_file=pki / "client.key"))
    address = BrokerAddress.parse("mqtts://gw:pw@broker.example:8883")
    assert str(address) == "mqtts://gw:***@broker.example:8883"
    assert "pw" not in repr(address)
