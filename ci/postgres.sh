#!/usr/bin/env bash
# Install PostgreSQL + PostGIS (Debian/Ubuntu), start a local cluster and create a test database with the
# postgis extension. Prints ONE line on stdout: the SQLAlchemy URL to export as CSPON_TEST_PG_URL, e.g.
#   export CSPON_TEST_PG_URL="$(ci/postgres.sh)"
# Progress goes to stderr. Needs root (apt-get, pg_ctlcluster). Idempotent: safe to run twice.
set -euo pipefail

DB_NAME="${CSPON_PG_DB:-cspon_test}"
DB_USER="${CSPON_PG_USER:-cspon}"
DB_PASS="${CSPON_PG_PASSWORD:-cspon}"
PORT="${CSPON_PG_PORT:-5432}"

log() { echo "[postgres.sh] $*" >&2; }

export DEBIAN_FRONTEND=noninteractive
if ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null; then
    log "installing postgresql + postgis with apt-get"
    apt-get update -qq >&2
    # Debian 12 names: postgresql (meta), postgis (meta) -> postgresql-15-postgis-3.
    apt-get install -y -qq postgresql postgis >&2
fi

PG_VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^${PG_VERSION} main$"; then
    log "creating cluster ${PG_VERSION}/main"
    pg_createcluster "${PG_VERSION}" main --port "${PORT}" >&2
fi
if ! pg_lsclusters -h | awk -v v="${PG_VERSION}" '$1==v && $2=="main" {print $4}' | grep -q online; then
    log "starting cluster ${PG_VERSION}/main"
    pg_ctlcluster "${PG_VERSION}" main start >&2
fi
PORT="$(pg_lsclusters -h | awk -v v="${PG_VERSION}" '$1==v && $2=="main" {print $3}')"

for _ in $(seq 1 30); do
    if su postgres -c "pg_isready -q -p ${PORT}"; then break; fi
    sleep 1
done

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -q -p ${PORT} $*" >&2; }

if ! su postgres -c "psql -p ${PORT} -tAc \"SELECT 1 FROM pg_roles WHERE rolname='${DB_USER}'\"" | grep -q 1; then
    log "creating role ${DB_USER}"
    psql_admin "-c \"CREATE ROLE ${DB_USER} LOGIN PASSWORD '${DB_PASS}'\""
fi
if ! su postgres -c "psql -p ${PORT} -tAc \"SELECT 1 FROM pg_database WHERE datname='${DB_NAME}'\"" | grep -q 1; then
    log "creating database ${DB_NAME}"
    psql_admin "-c \"CREATE DATABASE ${DB_NAME} OWNER ${DB_USER}\""
fi
psql_admin "-d ${DB_NAME} -c \"CREATE EXTENSION IF NOT EXISTS postgis\""
log "PostGIS ready: $(su postgres -c "psql -p ${PORT} -d ${DB_NAME} -tAc 'SELECT postgis_lib_version()'")"

echo "postgresql+psycopg://${DB_USER}:${DB_PASS}@localhost:${PORT}/${DB_NAME}"
