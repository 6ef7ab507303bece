"""The deployment files in deploy/ name only real commands, real settings and real metrics.

No Docker engine runs here and `docker compose` may be missing, so the files are checked by
what the machine has: `systemd-analyze verify` for the units (when present), `docker compose
config` for the compose file (when the plugin is present), and in every case a parse of each
file whose commands are run with `--help` and whose `LOVEKEY_*` variables are loaded as settings.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lovekey.config import load_settings
from lovekey.detectors.metrics import DetectMetrics
from lovekey.ingest.metrics import IngestMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
LOVEKEY = [sys.executable, "-m", "lovekey"]


def is_command(words: list[str]) -> bool:
    proc = subprocess.run(
        [*LOVEKEY, *words, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return proc.returncode == 0


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_every_unit_is_there_and_hardened() -> None:
    assert [p.stem for p in UNITS] == [
        "lovekey-alerts-worker",
        "lovekey-detect",
        "lovekey-ingest",
        "lovekey-maintain",
        "lovekey-serve",
    ]
    for path in UNITS:
        service = unit(path)["Service"]
        assert service["User"] == "lovekey", path.name
        assert service["Restart"] in ("always", "on-failure"), path.name
        assert service["NoNewPrivileges"] == "yes", path.name
        assert service["ProtectSystem"] == "strict", path.name
        assert service["ReadWritePaths"] == "/var/lib/lovekey", path.name


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.stem)
def test_each_unit_runs_a_real_lovekey_command(path: Path) -> None:
    exec_start = unit(path)["Service"]["ExecStart"].split()
    assert exec_start[0] == "/opt/lovekey/bin/lovekey"
    assert is_command(exec_start[1:]), exec_start


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    """`verify` insists that ExecStart exists: point the copies at this environment's lovekey."""
    lovekey = shutil.which("lovekey", path=str(Path(sys.executable).parent))
    assert lovekey
    copies = []
    for path in UNITS:
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace("/opt/lovekey/bin/lovekey", lovekey))
        copies.append(str(copy))
    proc = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # warnings (unknown keys, ...) count too


def compose() -> dict[str, object]:
    yaml = pytest.importorskip("yaml")
    data: dict[str, object] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_runs_real_commands_with_real_settings() -> None:
    services = compose()["services"]
    assert isinstance(services, dict)
    assert {"postgres", "mosquitto", "lovekey"} <= services.keys()
    app = services["lovekey"]
    assert is_command(app["command"][1:])
    assert app["command"][0] == "lovekey"
    env = {k: str(v) for k, v in app["environment"].items()}
    # the values as compose would give them, ${...} replaced by something valid
    filled = {
        k: re.sub(r"\$\{\w+(?::-([^}]*))?[^}]*\}", lambda m: m.group(1) or "x", v) for k, v in env.items()
    }
    settings = load_settings(environ=filled)
    assert settings.log_format == "json"
    assert settings.ingest.metrics_port == 9101
    assert settings.detect.metrics_port == 9102
    assert settings.alerts.metrics_port == 9103
    assert settings.database_url
    assert settings.database_url.startswith("postgresql://lovekey:")
    mosquitto = services["mosquitto"]["volumes"]
    assert "./broker:/mosquitto/config/lovekey:ro" in mosquitto
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf
    assert "password_file /mosquitto/config/lovekey/" in conf
    assert "acl_file /mosquitto/config/lovekey/" in conf


def test_env_example_and_dockerfile_name_real_settings_and_commands() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^USER lovekey", dockerfile, re.MULTILINE)
    assert "RUN pip install ." in dockerfile
    cmd = json.loads(re.findall(r"^CMD (.*)$", dockerfile, re.MULTILINE)[-1])
    assert cmd == ["lovekey", "run"]
    env = dict(re.findall(r"(LOVEKEY_[A-Z_]+)=(\S+)", dockerfile))
    assert load_settings(environ=env).web.host == "0.0.0.0"  # noqa: S104 (inside the container)


@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode != 0
    if shutil.which("docker")
    else True,
    reason="the docker compose plugin is not installed",
)
def test_docker_compose_config_accepts_the_file() -> None:
    proc = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "POSTGRES_PASSWORD": "x",
            "LOVEKEY_INGEST_MQTT_PASSWORD": "x",
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        },
    )
    assert proc.returncode == 0, proc.stderr


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "lovekey.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\blovekey_[a-z_]+", e)}
    known = {
        family.name + suffix
        for metrics in (IngestMetrics(), DetectMetrics())
        for family in metrics.registry().collect()
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    known |= {  # the outbox's, read from the database (tests/test_ops.py scrapes them)
        "lovekey_alerts_outbox_notifications",
        "lovekey_alerts_outbox_oldest_pending_seconds",
        "lovekey_alerts_outbox_oldest_due_seconds",
        "lovekey_alerts_delivery_attempts_total",
        "lovekey_alerts_notifications_queued_total",
    }
    assert used, exprs
    assert used <= known, used - known
