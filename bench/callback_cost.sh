#!/usr/bin/env bash
# Measures what a webhook callback costs when its password check is cached
# versus when it pays argon2id, against the release build and the local
# PostgreSQL. Usage: bash bench/callback_cost.sh [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
DB=koostatus_bench_$$
URL=postgres://postgres@127.0.0.1:5432/$DB
PORT=18231
BIN=target/release/koostatus
export SQLX_OFFLINE=true
cargo build --release --quiet
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $DB with (force)" postgres
}
KOOSTATUS_LOG__FILTER=warn $BIN --database-url "$URL" serve --listen 127.0.0.1:$PORT &
SERVER=$!
trap cleanup EXIT
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.2; done
echo 'bench-password' | $BIN --database-url "$URL" channel add bench --password-stdin >/dev/null

# One curl process sends every request over one keep-alive connection and
# prints the time of each; the first request pays argon2 and fills the cache.
measure() { # password status-message-prefix count
    local args=()
    for i in $(seq 1 "$3"); do
        args+=(-o /dev/null -w '%{http_code} %{time_total}\n' -X POST
            -H 'content-type: application/json' -H "Authorization: $1"
            -d "{\"message_id\":\"$2-$i\",\"sender\":\"s\",\"user_number\":\"u\",\"status\":\"read\"}"
            http://127.0.0.1:$PORT/social/on/whatsapp/koomessage/report/bench --next)
    done
    unset 'args[${#args[@]}-1]'
    curl -s "${args[@]}"
}
stats() { # label
    sort -n | awk -v label="$1" '{ t[NR] = $1 * 1000 } END {
        printf "%-28s n=%-4d p50=%7.2f ms  p99=%7.2f ms\n", label, NR, t[int(NR*0.5)+1], t[int(NR*0.99)+1] }'
}
first=$(measure bench-password first 1)
echo "first callback (argon2 + store): ${first#* }s, status ${first% *}"
measure bench-password cached "$N" | awk '$1 == 200 { print $2 }' | stats "cached password, stored"
measure wrong-password wrong 30 | awk '$1 == 401 { print $2 }' | stats "wrong password (argon2)"
