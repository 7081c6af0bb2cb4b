#!/usr/bin/env bash
# Makes a PostgreSQL server available on 127.0.0.1 for the store tests and
# prints its URL. Uses NACHFASS_TEST_POSTGRES_URL if set; otherwise installs
# Debian's postgresql if missing, starts a cluster and creates a test role.
set -euo pipefail

if [ -n "${NACHFASS_TEST_POSTGRES_URL:-}" ]; then
    echo "$NACHFASS_TEST_POSTGRES_URL"
    exit 0
fi

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    echo "installing postgresql (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

cluster=$(pg_lsclusters --no-header | head -n 1)
if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main >&2
    cluster=$(pg_lsclusters --no-header | head -n 1)
fi
read -r version name port status _ <<<"$cluster"
if [ "$status" != "online" ]; then
    pg_ctlcluster "$version" "$name" start >&2
fi

as_postgres() { runuser -u postgres -- "$@"; }
for _ in $(seq 1 30); do
    as_postgres psql -p "$port" -qtAc 'SELECT 1' >/dev/null 2>&1 && break
    sleep 1
done
as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'nachfass'" | grep -q 1 \
    || as_postgres psql -p "$port" -qc "CREATE ROLE nachfass LOGIN PASSWORD 'nachfass' CREATEDB" >&2
as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'nachfass_test'" | grep -q 1 \
    || as_postgres psql -p "$port" -qc "CREATE DATABASE nachfass_test OWNER nachfass" >&2
echo "postgres://nachfass:nachfass@127.0.0.1:$port/nachfass_test"
