#!/usr/bin/env bash
# Measures `koostatus prune` on a channel of N messages (default 1,000,000),
# each with two history entries and two feed entries, all last changed 100
# days ago, while callbacks keep arriving: prints the prune rate and the
# callback latency during the prune against the same callbacks before it.
# Usage: bash bench/prune_rate.sh [messages] [batch]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
BATCH=${2:-1000}
DB=koostatus_bench_prune_$$
URL=postgres://postgres@127.0.0.1:5432/$DB
PORT=18232
BIN=target/release/koostatus
export SQLX_OFFLINE=true
cargo build --release --quiet
SERVER=
cleanup() {
    [ -n "$SERVER" ] && { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
    psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $DB with (force)" postgres
}
trap cleanup EXIT
psql -q -h 127.0.0.1 -U postgres -c "create database $DB" postgres
$BIN --database-url "$URL" migrate >/dev/null
echo 'bench-password' | $BIN --database-url "$URL" channel add bench --password-stdin >/dev/null
echo "loading $N old messages..."
psql -q -h 127.0.0.1 -U postgres "$DB" <<SQL
insert into messages (channel_id, message_id, sender, user_number, status, first_seen_at, updated_at)
select 'bench', 'old-' || i, 's', 'u' || (i % 5000), 'read', now() - interval '101 days', now() - interval '100 days'
from generate_series(1, $N) i;
insert into message_history (channel_id, message_id, status, first_received_at, last_received_at, receipt_count, advanced, extra)
select 'bench', 'old-' || i, s::message_status, now() - interval '101 days', now() - interval '100 days', 1, true, '{}'
from generate_series(1, $N) i, unnest(array['delivered', 'read']) s;
insert into message_changes (channel_id, message_id, status, changed_at)
select 'bench', 'old-' || i, s::message_status, now() - interval '100 days'
from generate_series(1, $N) i, unnest(array['delivered', 'read']) s;
vacuum analyze;
SQL

KOOSTATUS_LOG__FILTER=warn $BIN --database-url "$URL" serve --listen 127.0.0.1:$PORT &
SERVER=$!
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.2; done

# Callbacks one after another over one keep-alive connection; prints each time.
callbacks() { # prefix count
    local args=()
    for i in $(seq 1 "$2"); do
        args+=(-o /dev/null -w '%{time_total}\n' -X POST
            -H 'content-type: application/json' -H 'Authorization: bench-password'
            -d "{\"message_id\":\"$1-$i\",\"sender\":\"s\",\"user_number\":\"u\",\"status\":\"read\"}"
            http://127.0.0.1:$PORT/social/on/whatsapp/koomessage/report/bench --next)
    done
    unset 'args[${#args[@]}-1]'
    curl -s "${args[@]}"
}
stats() { # label
    sort -n | awk -v label="$1" '{ t[NR] = $1 * 1000 } END {
        printf "%-34s n=%-5d p50=%7.2f ms  p99=%7.2f ms  max=%7.2f ms\n", label, NR, t[int(NR*0.5)+1], t[int(NR*0.99)+1], t[NR] }'
}
callbacks warm 50 >/dev/null
callbacks before 1000 | stats "callbacks before the prune"

DURING=$(mktemp)
( while :; do callbacks "during-$RANDOM" 200; done ) >"$DURING" 2>/dev/null &
LOAD=$!
START=$(date +%s.%N)
$BIN --database-url "$URL" prune --older-than 90d --batch "$BATCH" | tail -1
END=$(date +%s.%N)
kill "$LOAD" 2>/dev/null || true
wait "$LOAD" 2>/dev/null || true
stats "callbacks during the prune" <"$DURING"
rm -f "$DURING"
awk -v n="$N" -v s="$START" -v e="$END" -v b="$BATCH" 'BEGIN {
    printf "pruned %d messages (+ %d history, %d feed entries) in %.1f s: %.0f messages/s, batches of %d\n", n, 2*n, 2*n, e-s, n/(e-s), b }'
LEFT=$(psql -tA -h 127.0.0.1 -U postgres -c "select count(*) from messages where message_id like 'old-%'" "$DB")
echo "old messages left: $LEFT"
