#!/usr/bin/env bash
# The Debian package, tested as an operator would meet it: builds it with
# `cargo deb` (installing cargo-deb when missing), checks its contents and
# conffiles, has `systemd-analyze verify` check the unit, then extracts it
# with `dpkg-deb -x` into a temporary root and starts the packaged binary
# with the packaged configuration against a database of its own: the seed
# request of docs/koomessage.md must get 200 and be stored. Needs
# PostgreSQL at 127.0.0.1:5432 (trust, user postgres).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v cargo-deb >/dev/null; then
    cargo install cargo-deb --version 3.8.0 --locked --quiet
fi
# The release binary (the benchmarks build it too; cargo reuses it).
cargo build --release --locked --quiet
deb="$(cargo deb --no-build --strip --quiet 2>/dev/null | tail -n 1)"
[ -f "$deb" ] || deb="$(ls -t target/debian/koostatus_*.deb | head -n 1)"
echo "package: $deb"

root="$(mktemp -d)"
db="koostatus_package_$$"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    psql -h 127.0.0.1 -U postgres -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
    rm -rf "$root"
}
trap cleanup EXIT
fail() { echo "FAILED: $*"; exit 1; }

# Contents: binary, conffiles, unit, maintainer scripts.
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$root/DEBIAN"
for f in usr/bin/koostatus etc/koostatus/config.toml etc/koostatus/koostatus.env \
         usr/lib/systemd/system/koostatus.service usr/share/doc/koostatus/docs/operations.md; do
    [ -e "$root/$f" ] || fail "$f is not in the package"
done
grep -qx /etc/koostatus/config.toml "$root/DEBIAN/conffiles" || fail "config.toml is not a conffile"
grep -qx /etc/koostatus/koostatus.env "$root/DEBIAN/conffiles" || fail "koostatus.env is not a conffile"
[ "$(stat -c %a "$root/etc/koostatus/koostatus.env")" = 600 ] || fail "koostatus.env is readable by others"
grep -q "adduser --system" "$root/DEBIAN/postinst" || fail "postinst does not create the user"
if ldd "$root/usr/bin/koostatus" | grep -q libssl; then fail "OpenSSL is linked"; fi
echo "ok: contents, conffiles, postinst"

# The unit as systemd reads it (ExecStart pointed at the extracted binary:
# verify wants it to exist).
unit="$root/koostatus.service"
sed "s|/usr/bin/koostatus|$root/usr/bin/koostatus|" \
    "$root/usr/lib/systemd/system/koostatus.service" > "$unit"
if command -v systemd-analyze >/dev/null; then
    out="$(systemd-analyze verify "$unit" 2>&1 || true)"
    if echo "$out" | grep -v "koostatus.env" | grep -qi "koostatus.service"; then
        echo "$out"; fail "systemd-analyze verify"
    fi
    echo "ok: systemd-analyze verify"
else
    echo "skipped: systemd-analyze is not installed"
fi

# The packaged binary and configuration serve the seed request.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="postgres://postgres@127.0.0.1:5432/$db"
bin="$root/usr/bin/koostatus"
conf="$root/etc/koostatus/config.toml"
DATABASE_URL="$url" KOOSTATUS_LOG__FILTER=warn "$bin" --config "$conf" serve --listen "127.0.0.1:$port" &
pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || fail "the packaged service did not become ready"
echo "package-test-password" | DATABASE_URL="$url" "$bin" --config "$conf" \
    channel add 202105102694809992 --password-stdin >/dev/null
code="$(curl -s -o /dev/null -w '%{http_code}' \
    -H 'content-type: application/json; charset=utf-8' \
    -H 'Authorization: package-test-password' \
    --data '{ "sender": "86173xxxx4526", "user_number": "86187xxxx5632", "message_id": "044852ee407b40ec88ea65adb73ff5c27", "status": "read" }' \
    "http://127.0.0.1:$port/social/on/whatsapp/koomessage/report/202105102694809992")"
[ "$code" = 200 ] || fail "the seed request got $code"
stored="$(psql -h 127.0.0.1 -U postgres -d "$db" -Atc \
    "select status from messages where message_id = '044852ee407b40ec88ea65adb73ff5c27'")"
[ "$stored" = read ] || fail "the seed report is not stored (status '$stored')"
echo "ok: the packaged binary and configuration stored the seed report"
echo "package: 3 checks passed"
