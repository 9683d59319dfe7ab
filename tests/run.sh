#!/usr/bin/env bash
# Every test of koostatus, in the order of docs/development.md; stops at the
# first failure. The README's quick start runs this, and so does CI (.ci/run,
# after formatting and clippy). Each script installs what it needs when it
# is missing (browsers, Node.js packages, schemathesis, promtool, cargo-deb,
# pg_auto_failover, wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests need the machine's PostgreSQL at 127.0.0.1:5432 (trust auth).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
    pg_isready -h 127.0.0.1 -p 5432
fi

# The forwarding tests run a TLS receiver with the openssl command.
if ! command -v openssl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq openssl
fi

# Queries are checked against the committed .sqlx/, not a live database.
export SQLX_OFFLINE=true
unset DATABASE_URL

# Separate lines, not `&&`: set -e does not stop on the left side of `&&`.
python3 tests/layers.py
cargo test --locked
bash tests/browser/run.sh
bash tests/schemathesis/run.sh
bash deploy/check.sh
BENCH_ONLY=flood BENCH_SECONDS=5 cargo bench --locked --bench ingest
bash deploy/debian/test.sh
bash bench/ha-formation.sh
