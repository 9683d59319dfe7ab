#!/usr/bin/env bash
# High availability on one machine: a pg_auto_failover formation (a monitor
# and two PostgreSQL nodes with synchronous replication, each on its own
# port, run as the `postgres` user), koostatus on it with a multi-host
# database.url, and failover rounds under 16 callback clients:
#   1. SIGKILL of the primary's PostgreSQL (its keeper alive);
#   2. SIGKILL of the whole primary node (keeper and PostgreSQL).
# Each round prints the answers, the time from the kill until the other
# node accepts writes and until the first 200, and checks that every report
# answered 200 is on the primary afterwards. Everything is torn down at the
# end. Run as root (or as postgres): bash bench/ha-formation.sh [BINARY]
# (default target/release/koostatus; build it first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/koostatus}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 1; }
if ! command -v pg_autoctl >/dev/null; then
    apt-get update -qq && apt-get install -y -qq postgresql-15-auto-failover pg-auto-failover-cli
fi
PGBIN=$(pg_config --bindir)
BASE=$(mktemp -d /tmp/koostatus-ha.XXXXXX)
mkdir -p "$BASE/run" && touch "$BASE"/{monitor,node1,node2}.log
chown -R postgres:postgres "$BASE" 2>/dev/null || true
MON=6100 N1=6101 N2=6102 HTTP=18181
# pg_autoctl wants a clean environment with a runtime directory of its own.
as_pg() {
    local run=(env -i "XDG_RUNTIME_DIR=$BASE/run" "HOME=$BASE" "PATH=$PGBIN:/usr/bin:/bin" "$@")
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "${run[@]}"; else "${run[@]}"; fi
}
teardown() {
    [ -n "${SERVE:-}" ] && kill "$SERVE" 2>/dev/null || true
    for d in node1 node2 monitor; do
        as_pg pg_autoctl stop --pgdata "$BASE/$d" --sigkill >/dev/null 2>&1 || true
    done
    sleep 1
    pkill -9 -f "pgdata $BASE/" 2>/dev/null || true
    pkill -9 -f "postgres -D $BASE/" 2>/dev/null || true
    rm -rf "$BASE"
}
trap teardown EXIT
state() { as_pg pg_autoctl show state --pgdata "$BASE/monitor"; }

echo "== formation in $BASE"
as_pg pg_autoctl create monitor --pgdata "$BASE/monitor" --pgport $MON --hostname 127.0.0.1 \
    --listen 127.0.0.1 --auth trust --no-ssl >>"$BASE/monitor.log" 2>&1
as_pg bash -c "nohup pg_autoctl run --pgdata $BASE/monitor >>$BASE/monitor.log 2>&1 &"
sleep 3
# Production keeps the defaults (5 s checks, 20 s before a node is unhealthy,
# 30 s demote timeout: a dead primary is replaced after 40-50 s); this
# machine shortens them to see a failover in seconds.
psql -q -h 127.0.0.1 -p $MON -U postgres -d pg_auto_failover \
    -c "alter system set pgautofailover.health_check_period = 1000" \
    -c "alter system set pgautofailover.health_check_timeout = 1000" \
    -c "alter system set pgautofailover.health_check_max_retries = 1" \
    -c "alter system set pgautofailover.health_check_retry_delay = 500" \
    -c "alter system set pgautofailover.node_considered_unhealthy_timeout = 2000" \
    -c "alter system set pgautofailover.primary_demote_timeout = 5000" \
    -c "select pg_reload_conf()" >/dev/null
MONITOR_URI="postgres://autoctl_node@127.0.0.1:$MON/pg_auto_failover?sslmode=disable"
start_node() { # name port
    as_pg bash -c "nohup pg_autoctl create postgres --pgdata $BASE/$1 --pgport $2 --hostname 127.0.0.1 \
        --listen 127.0.0.1 --auth trust --no-ssl --name $1 --monitor '$MONITOR_URI' --run >>$BASE/$1.log 2>&1 &"
}
restart_node() { as_pg bash -c "nohup pg_autoctl run --pgdata $BASE/$1 >>$BASE/$1.log 2>&1 &"; }
wait_states() { # until one primary and one secondary
    for _ in $(seq 1 90); do
        s=$(state 2>/dev/null || true)
        if echo "$s" | grep -q "| *primary *| *primary" && echo "$s" | grep -q "| *secondary *| *secondary"; then
            echo "$s"; return 0
        fi
        sleep 2
    done
    echo "$s"; echo "the formation did not settle" >&2; return 1
}
start_node node1 $N1; sleep 10; start_node node2 $N2
wait_states
psql -Atq -h 127.0.0.1 -p $N1 -U postgres -c "show synchronous_standby_names" | sed 's/^/synchronous_standby_names: /'

URL="postgres://postgres@127.0.0.1:$N1,127.0.0.1:$N2/koostatus"
"$BIN" --database-url "$URL" serve --listen 127.0.0.1:$HTTP >"$BASE/serve.log" 2>&1 &
SERVE=$!
for _ in $(seq 1 60); do curl -sf 127.0.0.1:$HTTP/readyz >/dev/null && break; sleep 0.5; done
echo ha-pw | "$BIN" --database-url "$URL" channel add ha --password-stdin

primary_port() { state | awk -F'|' '$6 ~ /primary/ && $7 ~ /primary/ {split($3, a, ":"); gsub(/ /, "", a[2]); print a[2]}'; }
node_of() { [ "$1" = $N1 ] && echo node1 || echo node2; }
kill_node() { # SIGKILL a node's PostgreSQL, and with "node" its keeper too
    local pm ss keeper victims
    pm=$(head -1 "$BASE/$1/postmaster.pid"); ss=$(ps -o ppid= -p "$pm" | tr -d ' ')
    keeper=$(ps -o ppid= -p "$ss" | tr -d ' '); victims="$pm"
    if [ "$2" = node ]; then
        victims="$victims $ss"
        [ -n "$keeper" ] && [ "$keeper" != 1 ] && victims="$victims $keeper $(pgrep -P "$keeper" | tr '\n' ' ')"
    fi
    kill -9 $victims
}
cat >"$BASE/load.py" <<'PY'
# 16 callback clients until 3 s after the service answers 200 again after
# the kill (the first 200 that follows a failed answer after the kill,
# whose time is the mtime of the file named by argv[2]); writes every
# message id answered 200 to argv[3].
import http.client, json, os, sys, threading, time
rnd, killfile, out, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
acked, codes, lock, stop, first, failed = [], {}, threading.Lock(), [False], [None], [False]
def client(c):
    conn, n = http.client.HTTPConnection("127.0.0.1", port, timeout=15), 0
    while not stop[0]:
        n += 1
        mid = f"round{rnd}-c{c}-{n}"
        body = json.dumps({"message_id": mid, "sender": "s", "user_number": "u", "status": "delivered"})
        try:
            conn.request("POST", "/social/on/whatsapp/koomessage/report/ha", body,
                         {"Authorization": "ha-pw", "Content-Type": "application/json"})
            r = conn.getresponse(); r.read(); code = r.status
        except Exception:
            code = 0; conn.close(); conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        now = time.time()
        with lock:
            codes[code] = codes.get(code, 0) + 1
            if code == 200:
                acked.append(mid)
                if failed[0] and first[0] is None:
                    first[0] = now
            elif os.path.exists(killfile):
                failed[0] = True
        if code != 200:
            time.sleep(0.05)
threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
[t.start() for t in threads]
started = time.time()
while time.time() < started + 120 and (first[0] is None or time.time() < first[0] + 3):
    time.sleep(0.1)
stop[0] = True
[t.join() for t in threads]
killed = os.path.getmtime(killfile) if os.path.exists(killfile) else float("nan")
print(f"  answers: {dict(sorted(codes.items()))}; from the kill to the first 200: {(first[0] or float('nan')) - killed:.2f} s")
open(out, "w").write("\n".join(acked))
PY
round() { # number what(postgres|node)
    local port other node t0 writable
    port=$(primary_port); node=$(node_of "$port"); other=$([ "$port" = $N1 ] && echo $N2 || echo $N1)
    echo "== round $1: SIGKILL of the $2 of $node (primary, port $port)"
    rm -f "$BASE/killed-$1"
    python3 "$BASE/load.py" "$1" "$BASE/killed-$1" "$BASE/acked-$1" $HTTP &
    local load=$!
    sleep 3
    touch "$BASE/killed-$1"; t0=$(date +%s.%N)
    kill_node "$node" "$2"
    writable=""
    for _ in $(seq 1 1200); do
        for p in $other $port; do
            if [ "$(psql -Atq -h 127.0.0.1 -p $p -U postgres -d koostatus -c "select not pg_is_in_recovery()" 2>/dev/null)" = t ]; then
                writable="$p"; break 2
            fi
        done
        sleep 0.05
    done
    echo "  from the kill until port $writable accepts writes: $(awk "BEGIN { printf \"%.2f\", $(date +%s.%N) - $t0 }") s"
    wait $load
    local missing
    missing=$(comm -23 <(sort "$BASE/acked-$1") \
        <(psql -Atq -h 127.0.0.1 -p "$writable" -U postgres -d koostatus \
            -c "select message_id from messages where message_id like 'round$1-%'" | sort) | wc -l)
    echo "  answered 200: $(grep -c . "$BASE/acked-$1"); on the primary (port $writable) afterwards, missing: $missing"
    [ "$missing" = 0 ] || { echo "acknowledged reports lost" >&2; exit 1; }
}
round 1 postgres
[ -d "$BASE/node1" ] && [ -d "$BASE/node2" ]
# The killed node comes back as a secondary (its keeper restarts it in round 1).
wait_states >/dev/null
round 2 node
restart_node "$(node_of "$(state | awk -F'|' '$7 ~ /demoted|catchingup|secondary/ {split($3, a, ":"); gsub(/ /, "", a[2]); print a[2]}' | head -1)")" || true
echo "== done; log of serve: where the primary moved"
grep "primary moved" "$BASE/serve.log" | sed 's/\x1b\[[0-9;]*m//g' || true
