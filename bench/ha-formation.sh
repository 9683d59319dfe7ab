#!/usr/bin/env bash
# High availability on one machine: a pg_auto_failover formation (a monitor
# and two PostgreSQL nodes with synchronous replication, each on its own
# port, run as the `postgres` user), koostatus on it with a multi-host
# database.url, then:
#   - the callback rate on the formation against one PostgreSQL server of the
#     same settings without a standby (16 connections, wrk, RATE_SECONDS each,
#     alternated twice);
#   - ROUNDS failover rounds under 16 callback clients, alternately
#     SIGKILL of the primary's PostgreSQL (its keeper alive) and SIGKILL of
#     the whole primary node (keeper and PostgreSQL).
# Each round prints the answers, the time from the kill until a node commits
# again (a real commit, which waits for the synchronous standby), until the
# service's first 200, and between the two; then waits until the formation
# has a primary and a secondary again and checks that every report answered
# 200 is on the primary. Fails on an acknowledged report missing, an answer
# other than 200 or 503 (or none within 15 s), or a service not answering
# 200 within 20 s of the formation taking writes. Everything is torn down at
# the end. Run as root (or as postgres):
#   bash bench/ha-formation.sh [BINARY]   (default target/release/koostatus,
#   built when missing)
# Environment: ROUNDS (2), RATE_SECONDS (10).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/koostatus}")
if [ ! -x "$BIN" ]; then cargo build --release --locked; fi
ROUNDS=${ROUNDS:-2} RATE_SECONDS=${RATE_SECONDS:-10}
missing_tools=()
command -v pg_autoctl >/dev/null || missing_tools+=(postgresql-15-auto-failover pg-auto-failover-cli)
command -v wrk >/dev/null || missing_tools+=(wrk)
if [ ${#missing_tools[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing_tools[@]}" >/dev/null
fi
PGBIN=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
BASE=$(mktemp -d /tmp/koostatus-ha.XXXXXX)
chmod 755 "$BASE"
mkdir -p "$BASE/run" && touch "$BASE"/{monitor,node1,node2,solo}.log
chown -R postgres:postgres "$BASE" 2>/dev/null || true
MON=6100 N1=6101 N2=6102 SOLO=6103 HTTP=18181 HTTP_SOLO=18182
SERVE="" SERVE_SOLO=""
# pg_autoctl wants a clean environment with a runtime directory of its own.
as_pg() {
    local run=(env -i "XDG_RUNTIME_DIR=$BASE/run" "HOME=$BASE" "PATH=$PGBIN:/usr/bin:/bin" "$@")
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "${run[@]}"; else "${run[@]}"; fi
}
teardown() {
    kill $SERVE $SERVE_SOLO 2>/dev/null || true
    for d in node1 node2 monitor; do
        as_pg pg_autoctl stop --pgdata "$BASE/$d" --sigkill >/dev/null 2>&1 || true
    done
    as_pg pg_ctl -D "$BASE/solo" -m immediate stop >/dev/null 2>&1 || true
    sleep 1
    pkill -9 -f "pgdata $BASE/" 2>/dev/null || true
    pkill -9 -f -- "-D $BASE/" 2>/dev/null || true
    # pg_autoctl's start/stop children rename themselves ("pg_autoctl:
    # start/stop postgres") and outlived the lines above; their
    # environment still names this run's directory.
    for pid in $(pgrep -f "^pg_autoctl" 2>/dev/null); do
        if grep -qxzF "XDG_RUNTIME_DIR=$BASE/run" "/proc/$pid/environ" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    # Kept for a look after a failure: the service's log.
    cp "$BASE/serve.log" "${TMPDIR:-/tmp}/koostatus-ha-serve.log" 2>/dev/null || true
    # A keeper may still be writing its files for a moment.
    rm -rf "$BASE" 2>/dev/null || { sleep 2; rm -rf "$BASE"; } || true
}
trap teardown EXIT
state() { as_pg pg_autoctl show state --pgdata "$BASE/monitor"; }
now() { date +%s.%N; }
secs() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }

# A data directory with 128 MB of shared buffers: pg_autoctl would give each
# instance a quarter of the machine's memory (postgresql.auto.conf, written
# by ALTER SYSTEM, overrides its settings; a standby copies it).
small_cluster() {
    as_pg initdb -D "$BASE/$1" -A trust -U postgres --no-sync >/dev/null
    as_pg bash -c "echo \"shared_buffers = '128MB'\" >> $BASE/$1/postgresql.auto.conf"
}

echo "== formation in $BASE"
small_cluster monitor
as_pg pg_autoctl create monitor --pgdata "$BASE/monitor" --pgport $MON --hostname 127.0.0.1 \
    --listen 127.0.0.1 --auth trust --no-ssl >>"$BASE/monitor.log" 2>&1
as_pg bash -c "nohup pg_autoctl run --pgdata $BASE/monitor >>$BASE/monitor.log 2>&1 &"
for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p $MON && break; sleep 0.5; done
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
    local s=""
    for _ in $(seq 1 90); do
        s=$(state 2>/dev/null || true)
        if echo "$s" | grep -q "| *primary *| *primary" && echo "$s" | grep -q "| *secondary *| *secondary"; then
            return 0
        fi
        sleep 2
    done
    echo "$s"; echo "the formation did not settle" >&2; return 1
}
small_cluster node1
start_node node1 $N1
for _ in $(seq 1 60); do state 2>/dev/null | grep -q "| *single *| *single" && break; sleep 1; done
start_node node2 $N2
wait_states
state
for p in $N1 $N2; do
    echo "port $p: $(psql -Atq -h 127.0.0.1 -p $p -U postgres \
        -c "select 'shared_buffers ' || current_setting('shared_buffers') || ', synchronous_standby_names ''' || current_setting('synchronous_standby_names') || ''''")"
done

psql -q -h 127.0.0.1 -p "$(state | awk -F'|' '$6 ~ /primary/ {split($3, a, ":"); gsub(/ /, "", a[2]); print a[2]}')" \
    -U postgres -d postgres -c "create table ha_probe (at timestamptz)"

# One server of the same settings, no standby: the rate's baseline.
small_cluster solo
as_pg pg_ctl -D "$BASE/solo" -l "$BASE/solo.log" -w \
    -o "-p $SOLO -c listen_addresses=127.0.0.1 -c unix_socket_directories=$BASE/solo" start >/dev/null

wait_http() { for _ in $(seq 1 120); do curl -sf "127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.5; done; return 1; }
URL="postgres://postgres@127.0.0.1:$N1,127.0.0.1:$N2/koostatus"
SOLO_URL="postgres://postgres@127.0.0.1:$SOLO/koostatus"
KOOSTATUS_LOG__FILTER=koostatus::db::primary=debug,info \
    "$BIN" --database-url "$URL" serve --listen 127.0.0.1:$HTTP >"$BASE/serve.log" 2>&1 &
SERVE=$!
"$BIN" --database-url "$SOLO_URL" serve --listen 127.0.0.1:$HTTP_SOLO >"$BASE/serve-solo.log" 2>&1 &
SERVE_SOLO=$!
wait_http $HTTP && wait_http $HTTP_SOLO
echo ha-pw | "$BIN" --database-url "$URL" channel add ha --password-stdin
echo ha-pw | "$BIN" --database-url "$SOLO_URL" channel add ha --password-stdin

cat >"$BASE/report.lua" <<'LUA'
-- New messages, each id unique per thread and run.
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local n = 0
function request()
    n = n + 1
    local body = string.format(
        '{"message_id":"%s-t%d-%d","sender":"s","user_number":"u","status":"delivered"}',
        os.getenv("RUN"), tid, n)
    return wrk.format("POST", "/social/on/whatsapp/koomessage/report/ha",
        {["Authorization"] = "ha-pw", ["Content-Type"] = "application/json"}, body)
end
LUA
rate() { # http port, run name: callbacks/s over RATE_SECONDS with 16 connections
    local out
    out=$(RUN=$2 wrk -t2 -c16 -d"${RATE_SECONDS}s" -s "$BASE/report.lua" "http://127.0.0.1:$1")
    if echo "$out" | grep -q "Non-2xx"; then echo "$out" >&2; echo "answers other than 200" >&2; return 1; fi
    echo "$out" | awk '/Requests\/sec/ {print $2}'
}
echo "== callback rate, 16 connections, ${RATE_SECONDS} s each"
declare -a solo_rates formation_rates
for i in 1 2; do
    solo_rates+=("$(rate $HTTP_SOLO "solo$i")")
    formation_rates+=("$(rate $HTTP "formation$i")")
    echo "  one server ${solo_rates[-1]}/s, formation ${formation_rates[-1]}/s"
done
awk -v s="${solo_rates[*]}" -v f="${formation_rates[*]}" 'BEGIN {
    split(s, a, " "); split(f, b, " ");
    ms = (a[1] + a[2]) / 2; mf = (b[1] + b[2]) / 2;
    printf "  mean: one server %.0f/s, formation (synchronous standby) %.0f/s = %.2f of one server\n", ms, mf, mf / ms }'
kill $SERVE_SOLO; SERVE_SOLO=""
as_pg pg_ctl -D "$BASE/solo" -m fast stop >/dev/null

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
# Whether the server at a port commits a transaction within a second: with
# a synchronous standby configured, only once the standby confirms it.
# (A write: a standby, or a primary made read-only, refuses it.)
commits() { timeout 1 psql -Atq -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "insert into ha_probe values (now())" >/dev/null 2>&1; }
# Until stopped: probes both nodes every 0.1 s (in parallel: a waiting
# commit must not hold up the other), one line per probe in
# $BASE/probes-<round>: port, start, end, 1 if it committed.
probe_commits() { # round
    while :; do
        for p in $N1 $N2; do
            (t=$(now); if commits $p; then ok=1; else ok=0; fi; echo "$p $t $(now) $ok" >>"$BASE/probes-$1") &
        done
        sleep 0.1
    done
}
cat >"$BASE/load.py" <<'PY'
# 16 callback clients until the service has answered only 200 for 3 s
# after a failed answer after the kill (answers in flight at the kill come
# in any order), or 150 s; one line per request to argv[3]: sent, answered,
# status, message id.
import http.client, json, os, sys, threading, time
rnd, killfile, out, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
log, lock, stop, last_failure = [], threading.Lock(), [False], [None]
def client(c):
    conn, n = http.client.HTTPConnection("127.0.0.1", port, timeout=15), 0
    while not stop[0]:
        n += 1
        mid = f"round{rnd}-c{c}-{n}"
        body = json.dumps({"message_id": mid, "sender": "s", "user_number": "u", "status": "delivered"})
        sent = time.time()
        try:
            conn.request("POST", "/social/on/whatsapp/koomessage/report/ha", body,
                         {"Authorization": "ha-pw", "Content-Type": "application/json"})
            r = conn.getresponse(); r.read(); code = r.status
        except Exception:
            code = 0; conn.close(); conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        now = time.time()
        with lock:
            log.append(f"{sent:.3f} {now:.3f} {code} {mid}")
            if code != 200 and os.path.exists(killfile):
                last_failure[0] = now
        if code != 200:
            time.sleep(0.05)
threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
[t.start() for t in threads]
started = time.time()
while time.time() < started + 150 and (last_failure[0] is None or time.time() < last_failure[0] + 3):
    time.sleep(0.1)
stop[0] = True
[t.join() for t in threads]
open(out, "w").write("\n".join(log) + "\n")
PY
cat >"$BASE/figures.py" <<'PY'
# A round's figures from the requests and the probes after the kill at
# argv[1]; argv[4] is the port of the primary once the formation settled.
# "Takes writes again" is the end of the last interruption: for the
# formation, the first committed probe on that primary after the last one
# that failed; for the service, the first 200 to a request sent after the
# last request that got anything else. Exit 1 on an answer other than 200
# or 503 (0: none within 15 s), or a service that took more than 20 s
# longer than the formation.
import sys
killed, requests, probes, primary = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
reqs = [l.split() for l in open(requests) if l.strip()]
reqs = [(float(s), float(a), int(c)) for s, a, c, _ in reqs]
codes = {}
for _, _, c in reqs:
    codes[c] = codes.get(c, 0) + 1
print(f"  answers: {dict(sorted(codes.items()))}")
bad = sorted(c for c in codes if c not in (200, 503))
failed = [s for s, _, c in reqs if c != 200 and s >= killed]
end = max(a for _, a, _ in reqs)
service = None
if failed:
    service = min((a for s, a, c in reqs if c == 200 and s >= max(failed)), default=None)
probes = [l.split() for l in open(probes) if l.strip()]
probes = [(float(s), float(e), o == "1") for p, s, e, o in probes if p == primary and float(s) <= end]
lost = [s for s, _, ok in probes if not ok]
formation = min((e for s, e, ok in probes if ok and s >= max(lost, default=0)), default=None)
fmt = lambda t: "never" if t is None else f"{t - killed:.2f} s"
print(f"  from the kill until the formation takes writes again (port {primary}): {fmt(formation)}"
      + ("" if lost else " (no probe failed)"))
print(f"  from the kill until the service answers 200 again: {fmt(service)}"
      + ("" if failed else " (no callback refused)"))
if formation is not None and service is not None:
    print(f"  from the formation taking writes to the service's first 200: {service - formation:.2f} s")
if bad:
    sys.exit(f"answers other than 200 or 503: {bad}")
if formation is not None and service is not None and service - formation > 20:
    sys.exit("the service did not follow within 20 s")
PY
round() { # number what(postgres|node)
    local port node t0 load prober
    port=$(primary_port); node=$(node_of "$port")
    echo "== round $1: SIGKILL of the $2 of $node (primary, port $port)"
    python3 "$BASE/load.py" "$1" "$BASE/killed-$1" "$BASE/requests-$1" $HTTP &
    load=$!
    sleep 3
    touch "$BASE/killed-$1"; t0=$(now)
    kill_node "$node" "$2"
    echo "  killed at $(date -u -d "@$t0" +%H:%M:%S.%N | cut -c1-12) UTC"
    probe_commits "$1" &
    prober=$!
    wait $load
    kill $prober; wait $prober 2>/dev/null || true
    # The killed node rejoins (its keeper restarts it, or is restarted here).
    [ "$2" = node ] && restart_node "$node"
    wait_states
    port=$(primary_port)
    python3 "$BASE/figures.py" "$t0" "$BASE/requests-$1" "$BASE/probes-$1" "$port"
    local missing
    missing=$(comm -23 <(awk '$3 == 200 {print $4}' "$BASE/requests-$1" | sort) \
        <(psql -Atq -h 127.0.0.1 -p "$port" -U postgres -d koostatus \
            -c "select message_id from messages where message_id like 'round$1-%'" | sort) | wc -l)
    echo "  answered 200: $(awk '$3 == 200' "$BASE/requests-$1" | wc -l); on the primary (port $port) once the formation settled, missing: $missing"
    [ "$missing" = 0 ] || { echo "acknowledged reports lost" >&2; exit 1; }
}
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then round "$r" postgres; else round "$r" node; fi
done
echo "== done; where serve saw the primary move:"
grep -E "primary moved|not confirmed within" "$BASE/serve.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c12-200 || true
