#!/usr/bin/env bash
# bench/instructions.sh -- keyway's user-space instructions per proxied request, under callgrind.
#
# Throughput on a shared 2-core VM moves by +-10% from run to run; an instruction count does not.
# This script counts what keyway itself executes per request (kernel time excluded), so a change to
# the hot path can be judged in one run:
#   1. builds keyway (cargo build --release) unless KEYWAY_BIN is set;
#   2. starts an nginx upstream answering "ok\n", and keyway under valgrind --tool=callgrind with an
#      unauthenticated route `/` and an api-key route `/keyed/` (1,000 consumers in the config);
#   3. for each route, and for the public route with a browser-sized head: zeroes the counters,
#      runs wrk (1 thread, 10 connections, DURATION), dumps the counters, and prints
#      instructions / requests.
#
# Needs valgrind (callgrind_control), nginx, wrk, curl, sha256sum, python3.
# Environment: KEYWAY_BIN=path, DURATION=5s, BENCH_KEEP_TMP=1.

set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
API_KEY="kw-instr-$$-0123456789abcdef"
for tool in valgrind callgrind_control nginx wrk curl sha256sum python3; do
    command -v "$tool" >/dev/null || { echo "instructions: $tool not found" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyway-instr.XXXXXX")
chmod 711 "$TMP"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ ${BENCH_KEEP_TMP:-0} == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

if [[ -z ${KEYWAY_BIN:-} ]]; then
    cargo build --release >&2
    KEYWAY_BIN=$PWD/target/release/keyway
fi

read -r P_UP P_KW < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

mkdir -p "$TMP/up"
cat >"$TMP/up.conf" <<EOF
worker_processes 1;
daemon off;
error_log $TMP/up-error.log warn;
pid $TMP/up/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/up; proxy_temp_path $TMP/up; fastcgi_temp_path $TMP/up;
    uwsgi_temp_path $TMP/up; scgi_temp_path $TMP/up;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$P_UP; location / { return 200 "ok\n"; } }
}
EOF
nginx -p "$TMP/up/" -c "$TMP/up.conf" &
PIDS+=($!)

# other_consumers N: N more consumers with a key each, so the API-key row looks its key up among
# 1,000 as a real deployment would.
other_consumers() {
    python3 -c '
import hashlib, sys
for i in range(int(sys.argv[1])):
    digest = hashlib.sha256(f"other-key-{i}".encode()).hexdigest()
    print(f"  - {{name: other-{i}, api_keys: [\"sha256:{digest}\"]}}")' "$1"
}

cat >"$TMP/keyway.yaml" <<EOF
listen: 127.0.0.1:$P_KW
workers: 1
access_log: false
upstreams:
  app: {url: "http://127.0.0.1:$P_UP"}
consumers:
  - {name: bench, api_keys: ["sha256:$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)"]}
$(other_consumers 999)
authenticators:
  key: {type: api_key, header: x-api-key}
routes:
  - {name: plain, match: {path_prefix: /}, upstream: app, auth: []}
  - {name: keyed, match: {path_prefix: /keyed/}, upstream: app, auth: [key]}
EOF
valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" \
    "$KEYWAY_BIN" run -c "$TMP/keyway.yaml" >"$TMP/keyway.log" 2>&1 &
VG=$!
PIDS+=($VG)

# Readiness by polling: keyway under valgrind starts slowly.
for _ in $(seq 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_KW/") == 200 ]] && break
    kill -0 "$VG" 2>/dev/null || { cat "$TMP/keyway.log" >&2; exit 1; }
    sleep 0.2
done
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: $API_KEY" "http://127.0.0.1:$P_KW/keyed/x") == 200 ]] ||
    { echo "instructions: keyway did not answer 200" >&2; exit 1; }

# count NAME PATH [wrk args]: instructions per request for one route.
count() {
    local name=$1 path=$2 requests dump before dumps
    shift 2
    callgrind_control -z "$VG" >/dev/null 2>&1
    requests=$(wrk -t1 -c10 -d"$DURATION" "$@" "http://127.0.0.1:$P_KW$path" | awk '/requests in/ { print $1 }')
    dumps=("$TMP"/cg.out.*)
    before=${#dumps[@]}
    callgrind_control -d "$VG" >/dev/null 2>&1
    for _ in $(seq 100); do
        dumps=("$TMP"/cg.out.*)
        ((${#dumps[@]} > before)) && break
        sleep 0.1
    done
    dump=$(ls -t "${dumps[@]}" | head -1)
    awk -v r="$requests" -v n="$name" '/^summary:/ { printf "  %-16s %9d requests %9.0f instructions/request\n", n, r, $2 / r }' "$dump"
}

echo "keyway user-space instructions per request (callgrind; kernel excluded)"
count plain /
# The API-key route, its key among 1,000 consumers' keys.
count api-key /keyed/x -H "x-api-key: $API_KEY"
# A browser's request: 14 headers, about 600 bytes of head (wrk's own is 2 headers, 40 bytes), so
# the work that grows with the head shows.
count browser-head / \
    -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36" \
    -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8" \
    -H "Accept-Language: en-US,en;q=0.9" -H "Accept-Encoding: gzip, deflate, br" \
    -H "Cookie: _ga=GA1.1.123456789.1700000000; session=abcdefghijklmnopqrstuvwxyz0123456789; theme=dark" \
    -H "Sec-Fetch-Dest: document" -H "Sec-Fetch-Mode: navigate" -H "Sec-Fetch-Site: same-origin" \
    -H "Upgrade-Insecure-Requests: 1" -H "Referer: http://127.0.0.1/app/dashboard"
