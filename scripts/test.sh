#!/usr/bin/env bash
# Set up and run LoveKey's whole test suite on a fresh Debian-like machine.
# Installs and starts what the tests need when it is missing (PostgreSQL, Mosquitto,
# Chromium for the console's browser tests), makes a virtualenv, runs the static checks
# (ruff, ruff format, mypy --strict, import-linter) and then pytest.
# Extra arguments go to pytest.  Used as-is by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif have sudo; then sudo "$@"; else return 1; fi; }

missing=()
[ -n "${LOVEKEY_TEST_DATABASE_URL:-}" ] || have pg_ctlcluster || missing+=(postgresql)
[ -n "${LOVEKEY_TEST_MQTT_URL:-}" ] || have mosquitto || missing+=(mosquitto)
have mosquitto_pub || missing+=(mosquitto-clients)
have chromium || missing+=(chromium)
installed_postgres=no
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  [[ " ${missing[*]} " == *" postgresql "* ]] && installed_postgres=yes
fi

if [ -z "${LOVEKEY_TEST_DATABASE_URL:-}" ] && ! port_open 127.0.0.1 5432; then
  cluster=$(ls /etc/postgresql | sort -V | tail -1)
  if [ "$installed_postgres" = yes ]; then
    # a fresh install asks for passwords on TCP; the tests connect as postgres on loopback
    hba=/etc/postgresql/$cluster/main/pg_hba.conf
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
  log "starting PostgreSQL $cluster"
  as_root pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
fi
if [ -z "${LOVEKEY_TEST_MQTT_URL:-}" ] && ! port_open 127.0.0.1 1883; then
  log "starting Mosquitto"
  if [ -f /etc/mosquitto/mosquitto.conf ]; then
    as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
  else
    mosquitto -d -p 1883
  fi
fi
for _ in $(seq 50); do
  { [ -n "${LOVEKEY_TEST_DATABASE_URL:-}" ] || port_open 127.0.0.1 5432; } &&
    { [ -n "${LOVEKEY_TEST_MQTT_URL:-}" ] || port_open 127.0.0.1 1883; } && break
  sleep 0.2
done

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
log "installing lovekey and its test tools into .venv"
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import lovekey, paho.mqtt, psycopg' # fail here, clearly, if the install did

log "ruff check, ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
log "mypy --strict"
.venv/bin/mypy
log "import-linter: the layers of docs/architecture.md"
.venv/bin/lint-imports
log "pytest"
exec .venv/bin/pytest "$@"
