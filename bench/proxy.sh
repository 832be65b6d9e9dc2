#!/usr/bin/env bash
# bench/proxy.sh -- keyway vs nginx vs HAProxy: throughput, latency, idle memory.
#
# One run:
#   1. builds keyway (cargo build --release) unless KEYWAY_BIN is set, and
#      the hyper-floor and relay-floor examples;
#   2. starts an nginx upstream that answers every request with "ok\n";
#   3. starts three proxies in front of it: nginx, HAProxy, keyway
#      (keyway with an unauthenticated route `/` and an api-key route `/keyed/`;
#      JWT rows: keyway's jwt authenticator and HAProxy's jwt_verify, with the
#      same HS256 and RS256 tokens, `alg` pinned and `exp` checked on both),
#      plus three references without targets: nginx setting the headers keyway
#      adds; hyper-floor (examples/hyper_floor.rs), a proxy made of keyway's
#      HTTP stack alone, which shows what the stack allows and what keyway's
#      stages cost; and relay-floor (examples/relay_floor.rs), which only
#      relays bytes, so its req/s is the most this machine's load generator
#      (wrk and the upstream on one core) lets any proxy show;
#   4. runs wrk (1 thread, 50 connections) against each target after a 1s
#      warm-up, parses req/s and p50/p99 latency; repeats that ROUNDS times,
#      interleaved, and keeps each target's median;
#   5. opens 1000 idle keep-alive HTTP connections to each proxy and reads the
#      proxy's VmHWM / VmRSS from /proc;
#   6. prints a table (with each proxy's CPU time per request, read from
#      /proc/PID/stat around each wrk run), ratios and PASS/MISS against
#      keyway's targets.
#
# Exit status: 0 when the measurement completed (even if a target is MISSed),
# non-zero when anything failed to build, start or respond correctly.
#
# Environment:
#   KEYWAY_BIN=path     use this keyway binary instead of building one
#   DURATION=10s        wrk duration per target and round (default 10s)
#   ROUNDS=3            rounds over all targets; each row reports the median of its
#                       rounds, so drift on a shared machine hits every target alike
#   BENCH_SMOKE=1       quick run for CI: one round of wrk -d2s (overrides both)
#   IDLE_CONNS=1000     idle keep-alive connections for the memory measurement
#   BENCH_KEEP_TMP=1    keep the temp dir (configs, logs, raw wrk output)
#   BENCH_ONLY="a b"    run only these rows (e.g. "nginx nginx-log keyway keyway-log");
#                       ratios whose rows did not run are n/a
#   BENCH_SKIP_KEYWAY=1 benchmark only nginx/HAProxy (to test this harness
#                       itself while keyway does not build); keyway rows,
#                       ratios and targets are reported as n/a
#
# CPU pinning: if `taskset` exists and there are >= 2 CPUs, the proxy under
# test runs on core 0 while wrk, the upstream nginx and the idle-connection
# client run on core 1, so the proxy never competes with the load generator
# for CPU. Every proxy (and its workers/threads) gets core 0 alone.
#
# Adding rows: start the extra server (e.g. a HAProxy frontend with
# jwt_verify, or a keyway route with a jwt authenticator) and call
#   bench_target NAME URL [extra wrk args...]
# in the "benchmarks" section; results land in RPS[NAME], P50[NAME],
# P99[NAME] and are printed in order. Add ratio targets with
#   check_ratio LABEL "$(ratio "$(val RPS a)" "$(val RPS b)")" ">=" THRESHOLD
# and idle-memory rows with measure_idle NAME PORT PID.

set -euo pipefail

cd "$(dirname "$0")/.."
REPO_ROOT=$(pwd)
BENCH_DIR=$REPO_ROOT/bench

# ----------------------------------------------------------------- settings --
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
if [[ ${BENCH_SMOKE:-0} == 1 ]]; then DURATION=2s ROUNDS=1; fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 1; }
WARMUP=1s
WRK_THREADS=1
WRK_CONNS=50
IDLE_CONNS=${IDLE_CONNS:-1000}
SKIP_KEYWAY=${BENCH_SKIP_KEYWAY:-0}
READY_TIMEOUT=15   # seconds allowed for a server to start answering
API_KEY="kw-bench-$$-0123456789abcdef"

# targets for keyway (plain route) -- see check_ratio calls at the end
TARGET_RPS_VS_NGINX=1.0
TARGET_RPS_VS_HAPROXY=1.0
TARGET_P99_VS_NGINX=1.0
TARGET_P99_VS_HAPROXY=1.0
TARGET_APIKEY_VS_PLAIN=0.95
TARGET_LOG_CPU=1.05
TARGET_PEAK_RSS_MB=30
# JWT rows (issue #3): same tokens for keyway and HAProxy's jwt_verify
TARGET_JWT_HS_VS_HAPROXY=1.3
TARGET_JWT_RS_VS_HAPROXY=2.0
TARGET_JWT_RS_VS_PLAIN=0.9
JWT_SECRET="kw-bench-jwt-secret-$$-0123456789abcdef"

# ------------------------------------------------------------------ helpers --
# shellcheck source=bench/lib.sh
source bench/lib.sh

for tool in nginx haproxy wrk curl python3 sha256sum awk ss openssl; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool not found: $tool"
done

# 1000 idle connections + wrk + upstream keep-alive need more than 1024 fds.
# Children (proxies, idle_conns.py) inherit the limit. Never lower it.
if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < 4096)); then
    ulimit -n 4096 || die "cannot raise 'ulimit -n' to 4096 (hard limit $(ulimit -Hn))"
fi
# Connection limits for nginx/HAProxy: idle conns + benchmark conns + slack.
# HAProxy needs ~2 fds per connection and refuses to start if the fd limit is
# below that, so keep 2*MAX_CONNS under the (>= 4096) fd limit.
MAX_CONNS=$((IDLE_CONNS + 500))
if [[ $(ulimit -n) != unlimited ]] && ((2 * MAX_CONNS + 100 > $(ulimit -n))); then
    die "IDLE_CONNS=$IDLE_CONNS too large for 'ulimit -n' $(ulimit -n)"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyway-bench.XXXXXX")
# nginx workers drop privileges to 'nobody' when started as root; they must be
# able to traverse into the temp dir to reach their temp paths.
chmod 711 "$TMP"

declare -a PIDS=()          # every background process we started, in order
declare -A PID_NAME=()      # pid -> human name
declare -A RPS=() P50=() P99=() ERRS=()
declare -A RPS_ROUNDS=() P50_ROUNDS=() P99_ROUNDS=()   # space-separated, one value per round
# CPU time (user + kernel) the proxy process spends per request: steadier than req/s on a shared
# machine, and 1 / (CPU per request) is what a proxy pinned to one core can serve.
declare -A CPU_PID=() CPU=() CPU_ROUNDS=()
CLK_TCK=$(getconf CLK_TCK)
declare -a ORDER=()         # bench_target names in the order they first ran
declare -A IDLE_HWM=() IDLE_RSS=() IDLE_RSS0=() IDLE_ESTAB=() IDLE_OPEN=()
declare -a IDLE_ORDER=()

child_pids() {
    if command -v pgrep >/dev/null 2>&1; then
        pgrep -P "$1" || true
    else
        ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
    fi
}

# stop_pid PID: TERM, poll up to 5s, then KILL; also reap leftover children
# (nginx workers) by pid.
stop_pid() {
    local pid=$1 kids i
    kids=$(child_pids "$pid")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.05
        done
        if alive "$pid"; then
            log "${PID_NAME[$pid]:-pid $pid} did not exit on TERM; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    for i in $kids; do
        if alive "$i"; then kill -KILL "$i" 2>/dev/null || true; fi
    done
}

cleanup() {
    local rc=$? i f
    trap - EXIT INT TERM
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    if ((rc != 0)); then
        for f in "$TMP"/*.log; do
            [[ -s $f && $f != *-configtest.log ]] || continue
            printf '[bench] ---- last lines of %s ----\n' "${f##*/}" >&2
            tail -n 20 "$f" >&2
        done
    fi
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
        log "kept temp dir: $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# start_bg NAME LOGFILE CMD...: run CMD in the background, register it for
# cleanup; its pid is left in LAST_PID. (`taskset` execs the command, so the
# pid is the real server's pid.)
start_bg() {
    local name=$1 logf=$2
    shift 2
    "$@" >"$logf" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    PID_NAME[$LAST_PID]=$name
}

# wait_http NAME URL PID: poll until URL answers any HTTP status.
wait_http() {
    local name=$1 url=$2 pid=$3 code deadline=$((SECONDS + READY_TIMEOUT))
    while :; do
        if ! alive "$pid"; then
            local st=0
            wait "$pid" || st=$?
            die "$name exited during startup (exit status $st)"
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
        [[ $code =~ ^[1-5][0-9][0-9]$ ]] && return 0
        ((SECONDS < deadline)) || die "$name not answering on $url after ${READY_TIMEOUT}s"
        sleep 0.05
    done
}

# expect_status NAME WANT URL [curl args...]: one request, must return WANT;
# when WANT is 200 the body must be the upstream's "ok".
expect_status() {
    local name=$1 want=$2 url=$3 out code body
    shift 3
    out=$(curl -sS --max-time 5 -w '\n%{http_code}' "$@" "$url" 2>&1) ||
        die "$name: request to $url failed: $out"
    code=${out##*$'\n'}
    body=${out%$'\n'*}
    body=${body%$'\n'}   # upstream body is "ok\n"
    [[ $code == "$want" ]] || die "$name: $url returned HTTP $code, expected $want (body: ${body:0:200})"
    if [[ $want == 200 && $body != ok ]]; then
        die "$name: $url returned unexpected body: ${body:0:200}"
    fi
    log "ok: $name $url -> $code"
}

check_all_alive() {
    local pid
    for pid in "${PIDS[@]}"; do
        alive "$pid" || die "${PID_NAME[$pid]:-pid $pid} died ($1)"
    done
}

# Convert a wrk output file into "RPS P50_US P99_US SOCKET_ERRORS NON2XX".
parse_wrk() {
    awk '
    function to_us(v,   n, u) {
        n = v + 0
        u = v
        sub(/^[0-9.]+/, "", u)
        if (u == "us") return n
        if (u == "ns") return n / 1000
        if (u == "ms") return n * 1000
        if (u == "s")  return n * 1000000
        if (u == "m")  return n * 60000000
        if (u == "h")  return n * 3600000000
        return "NA"
    }
    /^[ \t]*Requests\/sec:/         { rps = $2 }
    /^[ \t]*Latency Distribution/   { dist = 1; next }
    dist && $1 == "50%"             { p50 = to_us($2) }
    dist && $1 == "99%"             { p99 = to_us($2); dist = 0 }
    /^[ \t]*Socket errors:/ {
        for (i = 3; i <= NF; i++) { x = $i; gsub(/,/, "", x); if (x ~ /^[0-9]+$/) errs += x }
    }
    /Non-2xx or 3xx responses:/     { non2xx = $NF }
    END {
        printf "%s %s %s %d %d\n", (rps == "" ? "NA" : rps), (p50 == "" ? "NA" : p50),
               (p99 == "" ? "NA" : p99), errs, non2xx
    }' "$1"
}

is_num() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]]; }

# bench_target NAME URL [extra wrk args...]
bench_target() {
    local name=$1 url=$2 out parsed rps p50 p99 errs non2xx
    shift 2
    # BENCH_ONLY narrows a run to some rows (more rounds for one ratio in the same time).
    [[ -z ${BENCH_ONLY:-} || " $BENCH_ONLY " == *" $name "* ]] || return 0
    out=$TMP/wrk-$name.txt

    if [[ -z ${RPS_ROUNDS[$name]:-} ]]; then
        log "warm-up: $name ($WARMUP)"
        "${PIN_LOAD[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WARMUP" "$@" "$url" \
            >"$TMP/wrk-$name-warmup.txt" 2>&1 ||
            die "wrk warm-up failed for $name: $(cat "$TMP/wrk-$name-warmup.txt")"
        ORDER+=("$name")
    fi

    log "bench:   $name ($DURATION) $url"
    local pid=${CPU_PID[$name]:-} ticks_before=0 ticks_after=0 requests
    [[ -n $pid ]] && ticks_before=$(cpu_ticks "$pid")
    "${PIN_LOAD[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$DURATION" --latency "$@" "$url" \
        >"$out" 2>&1 ||
        die "wrk failed for $name: $(cat "$out")"
    [[ -n $pid ]] && ticks_after=$(cpu_ticks "$pid")
    check_all_alive "during benchmark of $name"
    requests=$(awk '/ requests in / { print $1 }' "$out")
    if [[ -n $pid ]] && is_num "$requests" && ((requests > 0)); then
        CPU_ROUNDS[$name]+="$(awk -v t=$((ticks_after - ticks_before)) -v hz="$CLK_TCK" -v n="$requests" \
            'BEGIN { printf "%.2f", t * 1000000 / hz / n }') "
    fi

    parsed=$(parse_wrk "$out")
    read -r rps p50 p99 errs non2xx <<<"$parsed"
    if ((non2xx > 0)); then
        cat "$out" >&2
        die "$name: wrk reported $non2xx Non-2xx or 3xx responses"
    fi
    if ! is_num "$rps" || ! is_num "$p50" || ! is_num "$p99" ||
        awk -v r="$rps" 'BEGIN { exit !(r <= 0) }'; then
        cat "$out" >&2
        die "$name: could not parse wrk output (rps=$rps p50=$p50 p99=$p99)"
    fi
    if ((errs > 0)); then
        log "warning: $name: wrk reported $errs socket errors"
    fi
    RPS_ROUNDS[$name]+="$rps "
    P50_ROUNDS[$name]+="$p50 "
    P99_ROUNDS[$name]+="$p99 "
    ERRS[$name]=$((${ERRS[$name]:-0} + errs))
}

# measure_idle NAME PORT PID: open IDLE_CONNS idle keep-alive connections to
# 127.0.0.1:PORT, then record VmHWM/VmRSS of PID (the process serving them).
measure_idle() {
    local name=$1 port=$2 pid=$3 out ipid deadline estab
    out=$TMP/idle-$name.log
    alive "$pid" || die "$name (pid $pid) is not running"
    IDLE_RSS0[$name]=$(proc_kb "$pid" VmRSS)

    log "idle:    $name: opening $IDLE_CONNS keep-alive connections"
    start_bg "idle_conns($name)" "$out" \
        "${PIN_LOAD[@]}" python3 "$BENCH_DIR/idle_conns.py" --hold signal 127.0.0.1 "$port" "$IDLE_CONNS"
    ipid=$LAST_PID
    deadline=$((SECONDS + 60))
    until grep -q '^ready ' "$out"; do
        alive "$ipid" || die "idle_conns.py against $name failed: $(cat "$out")"
        ((SECONDS < deadline)) || die "idle_conns.py against $name not ready after 60s"
        sleep 0.05
    done
    alive "$pid" || die "$name died while opening idle connections"

    IDLE_HWM[$name]=$(proc_kb "$pid" VmHWM)
    IDLE_RSS[$name]=$(proc_kb "$pid" VmRSS)
    # established server-side sockets on the proxy's listening port
    estab=$(ss -Htn state established "( sport = :$port )" | wc -l)
    IDLE_ESTAB[$name]=$estab

    kill -TERM "$ipid"
    wait "$ipid" || die "idle_conns.py against $name exited with an error: $(cat "$out")"
    forget_pid "$ipid"
    IDLE_OPEN[$name]=$(awk '$1 == "still-open" { print $2 }' "$out")
    IDLE_ORDER+=("$name")
}

# ------------------------------------------------------------------ pinning --
if command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
    PIN_PROXY=(taskset -c 0)  # proxy under test: core 0
    PIN_LOAD=(taskset -c 1)   # wrk, upstream nginx, idle_conns.py: core 1
    PINNING="proxy on core 0; wrk + upstream on core 1"
else
    PIN_PROXY=()
    PIN_LOAD=()
    PINNING="none (taskset missing or < 2 CPUs)"
fi

# -------------------------------------------------------------------- build --
if [[ $SKIP_KEYWAY == 1 ]]; then
    log "BENCH_SKIP_KEYWAY=1: not building or running keyway"
elif [[ -n ${KEYWAY_BIN:-} ]]; then
    [[ -x $KEYWAY_BIN ]] || die "KEYWAY_BIN=$KEYWAY_BIN is not an executable file"
else
    log "building keyway (cargo build --release)"
    cargo build --release
    KEYWAY_BIN=$REPO_ROOT/target/release/keyway
    [[ -x $KEYWAY_BIN ]] || die "build did not produce $KEYWAY_BIN"
fi
# The reference proxies: keyway's own HTTP stack alone (examples/hyper_floor.rs), and a byte
# relay with no HTTP library (examples/relay_floor.rs).
if [[ $SKIP_KEYWAY != 1 ]]; then
    log "building the hyper-floor and relay-floor references (cargo build --release --example ...)"
    cargo build --release --example hyper_floor --example relay_floor
    FLOOR_BIN=$REPO_ROOT/target/release/examples/hyper_floor
    RELAY_BIN=$REPO_ROOT/target/release/examples/relay_floor
    [[ -x $FLOOR_BIN ]] || die "build did not produce $FLOOR_BIN"
    [[ -x $RELAY_BIN ]] || die "build did not produce $RELAY_BIN"
fi

# -------------------------------------------------------------------- ports --
ports=$(free_ports 10) || die "cannot allocate free ports"
read -r P_UPSTREAM P_NGINX P_HAPROXY P_KEYWAY P_HAPROXY_JWT P_NGINX_FWD P_FLOOR P_RELAY \
    P_NGINX_LOG P_KEYWAY_LOG <<<"$ports"
[[ -n ${P_RELAY:-} ]] || die "cannot allocate free ports (got: $ports)"

# ---------------------------------------------------------------- jwt keys --
# One RSA key pair and one HMAC secret; the tokens are minted here with openssl
# (so the HAProxy rows work with BENCH_SKIP_KEYWAY=1 too) and sent unchanged to
# keyway and to HAProxy. Claims: the consumer claim `key`, sub, iat, exp (1h).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/jwt-rs.key.pem" 2>/dev/null ||
    die "openssl could not generate an RSA key"
openssl pkey -in "$TMP/jwt-rs.key.pem" -pubout -out "$TMP/jwt-rs.pub.pem" ||
    die "openssl could not extract the RSA public key"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# mint_jwt ALG CONSUMER -> compact token on stdout
mint_jwt() {
    local alg=$1 consumer=$2 now input
    now=$(date +%s)
    input="$(printf '{"alg":"%s","typ":"JWT"}' "$alg" | b64url).$(
        printf '{"key":"%s","sub":"%s","iat":%d,"exp":%d}' "$consumer" "$consumer" "$now" $((now + 3600)) | b64url)"
    case $alg in
        HS256) printf '%s.%s' "$input" "$(printf %s "$input" | openssl dgst -sha256 -hmac "$JWT_SECRET" -binary | b64url)" ;;
        RS256) printf '%s.%s' "$input" "$(printf %s "$input" | openssl dgst -sha256 -sign "$TMP/jwt-rs.key.pem" -binary | b64url)" ;;
    esac
}
TOKEN_HS=$(mint_jwt HS256 bench-hs)
TOKEN_RS=$(mint_jwt RS256 bench-rs)
[[ $TOKEN_HS =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || die "could not mint the HS256 token"
[[ $TOKEN_RS =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || die "could not mint the RS256 token"

# ------------------------------------------------------------------- nginx --
# nginx_conf NAME BODY: full nginx config with a private prefix under $TMP.
nginx_conf() {
    local name=$1 body=$2 dir=$TMP/$1
    mkdir -p "$dir"
    cat >"$TMP/$name.conf" <<EOF
worker_processes 1;
daemon off;
error_log $TMP/$name-error.log warn;
pid $dir/nginx.pid;
events { worker_connections $MAX_CONNS; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # Don't close client keep-alive connections every 1000 requests (nginx
    # default); HAProxy and keyway don't either.
    keepalive_requests 1000000;
$body
}
EOF
}

# start_nginx NAME PIN...: validate and start; pid in LAST_PID
start_nginx() {
    local name=$1
    shift
    nginx -p "$TMP/$name/" -e "$TMP/$name-error.log" -c "$TMP/$name.conf" -t \
        >"$TMP/$name-configtest.log" 2>&1 || die "nginx config $name invalid: $(cat "$TMP/$name-configtest.log")"
    start_bg "nginx-$name" "$TMP/$name.log" \
        "$@" nginx -p "$TMP/$name/" -e "$TMP/$name-error.log" -c "$TMP/$name.conf"
}

nginx_conf upstream "
    server {
        listen 127.0.0.1:$P_UPSTREAM;
        location / {
            default_type text/plain;
            return 200 \"ok\n\";
        }
    }"
start_nginx upstream "${PIN_LOAD[@]}"
PID_UPSTREAM=$LAST_PID
wait_http "upstream nginx" "http://127.0.0.1:$P_UPSTREAM/" "$PID_UPSTREAM"
expect_status "upstream" 200 "http://127.0.0.1:$P_UPSTREAM/"

nginx_conf nginx-proxy "
    upstream app {
        server 127.0.0.1:$P_UPSTREAM;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_NGINX;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }
    # For reference only (no target): the same worker setting the request headers keyway
    # adds on every request (SPEC 4: X-Forwarded-*, X-Real-IP, Forwarded, X-Request-Id).
    server {
        listen 127.0.0.1:$P_NGINX_FWD;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header Forwarded \"for=\$remote_addr;proto=\$scheme;host=\\\"\$host\\\"\";
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id;
        }
    }
    # The access log on, as production keeps it: nginx's default format, buffered.
    server {
        listen 127.0.0.1:$P_NGINX_LOG;
        access_log $TMP/nginx-access.log combined buffer=64k flush=1s;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
start_nginx nginx-proxy "${PIN_PROXY[@]}"
PID_NGINX=$LAST_PID
wait_http "nginx proxy" "http://127.0.0.1:$P_NGINX/" "$PID_NGINX"
expect_status "nginx-proxy" 200 "http://127.0.0.1:$P_NGINX/"
expect_status "nginx-proxy" 200 "http://127.0.0.1:$P_NGINX_FWD/"
expect_status "nginx-proxy" 200 "http://127.0.0.1:$P_NGINX_LOG/"

# ----------------------------------------------------------------- haproxy --
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $MAX_CONNS
    # no 'log' lines: logging disabled

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe_plain
    bind 127.0.0.1:$P_HAPROXY
    default_backend be_app

# JWT: the blog pattern of research/jwt.md §4.2 -- alg pinned per path, the
# signature verified with jwt_verify, exp compared with date(), the token
# removed before forwarding (as keyway does).
frontend fe_jwt
    bind 127.0.0.1:$P_HAPROXY_JWT
    acl jwt_hs path_beg /jwt-hs/
    acl jwt_rs path_beg /jwt-rs/
    http-request set-var(txn.alg) http_auth_bearer,jwt_header_query('\$.alg')
    http-request set-var(txn.exp) http_auth_bearer,jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 if jwt_hs !{ var(txn.alg) -m str HS256 }
    http-request deny deny_status 401 if jwt_rs !{ var(txn.alg) -m str RS256 }
    http-request deny deny_status 401 if jwt_hs !{ http_auth_bearer,jwt_verify(txn.alg,"$JWT_SECRET") -m int 1 }
    http-request deny deny_status 401 if jwt_rs !{ http_auth_bearer,jwt_verify(txn.alg,"$TMP/jwt-rs.pub.pem") -m int 1 }
    http-request deny deny_status 401 unless { var(txn.exp) -m found }
    http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
    http-request del-header authorization
    default_backend be_app

backend be_app
    http-reuse always
    server app 127.0.0.1:$P_UPSTREAM
EOF
haproxy -c -f "$TMP/haproxy.cfg" >"$TMP/haproxy-configtest.log" 2>&1 ||
    die "haproxy config invalid: $(cat "$TMP/haproxy-configtest.log")"
# -db: stay in the foreground (we background it ourselves; pid = $!)
start_bg haproxy "$TMP/haproxy.log" "${PIN_PROXY[@]}" haproxy -db -f "$TMP/haproxy.cfg"
PID_HAPROXY=$LAST_PID
wait_http "haproxy" "http://127.0.0.1:$P_HAPROXY/" "$PID_HAPROXY"
expect_status "haproxy" 200 "http://127.0.0.1:$P_HAPROXY/"
for path in jwt-hs jwt-rs; do
    expect_status "haproxy-jwt" 401 "http://127.0.0.1:$P_HAPROXY_JWT/$path/x"
    expect_status "haproxy-jwt" 401 "http://127.0.0.1:$P_HAPROXY_JWT/$path/x" -H "Authorization: Bearer ${TOKEN_HS}x"
done
expect_status "haproxy-jwt" 401 "http://127.0.0.1:$P_HAPROXY_JWT/jwt-rs/x" -H "Authorization: Bearer $TOKEN_HS"
expect_status "haproxy-jwt" 200 "http://127.0.0.1:$P_HAPROXY_JWT/jwt-hs/x" -H "Authorization: Bearer $TOKEN_HS"
expect_status "haproxy-jwt" 200 "http://127.0.0.1:$P_HAPROXY_JWT/jwt-rs/x" -H "Authorization: Bearer $TOKEN_RS"

# ------------------------------------------------------------------ keyway --
if [[ $SKIP_KEYWAY != 1 ]]; then
    KEY_HASH=$(printf %s "$API_KEY" | sha256sum | awk '{ print $1 }')
    [[ $KEY_HASH =~ ^[0-9a-f]{64}$ ]] || die "sha256sum produced: $KEY_HASH"
    cat >"$TMP/keyway.yaml" <<EOF
listen: 127.0.0.1:$P_KEYWAY
workers: 1
access_log: false
upstreams:
  app: {url: "http://127.0.0.1:$P_UPSTREAM"}
consumers:
  - name: bench
    api_keys: ["sha256:$KEY_HASH"]
  - name: bench-hs
    jwt: {key: bench-hs, secret: "$JWT_SECRET"}
  - name: bench-rs
    jwt: {key: bench-rs, public_key_file: $TMP/jwt-rs.pub.pem, algorithm: RS256}
authenticators:
  key: {type: api_key, header: x-api-key}
  jwt: {type: jwt}
routes:
  - {name: plain, match: {path_prefix: /}, upstream: app, auth: []}
  - {name: keyed, match: {path_prefix: /keyed/}, upstream: app, auth: [key]}
  - {name: jwt-hs, match: {path_prefix: /jwt-hs/}, upstream: app, auth: [jwt]}
  - {name: jwt-rs, match: {path_prefix: /jwt-rs/}, upstream: app, auth: [jwt]}
EOF
    start_bg keyway "$TMP/keyway.log" "${PIN_PROXY[@]}" "$KEYWAY_BIN" run -c "$TMP/keyway.yaml"
    PID_KEYWAY=$LAST_PID
    wait_http "keyway" "http://127.0.0.1:$P_KEYWAY/" "$PID_KEYWAY"
    # The same keyway with its access log on, written to a file as nginx's is.
    sed -e "s/^listen: .*/listen: 127.0.0.1:$P_KEYWAY_LOG/" \
        -e "s|^access_log: false|access_log: {path: $TMP/keyway-access.log}|" \
        "$TMP/keyway.yaml" >"$TMP/keyway-log.yaml"
    start_bg keyway-log "$TMP/keyway-log.log" "${PIN_PROXY[@]}" "$KEYWAY_BIN" run -c "$TMP/keyway-log.yaml"
    PID_KEYWAY_LOG=$LAST_PID
    wait_http "keyway-log" "http://127.0.0.1:$P_KEYWAY_LOG/" "$PID_KEYWAY_LOG"
    # For reference only (no target): hyper and tokio as keyway uses them, with no keyway stage.
    start_bg hyper-floor "$TMP/hyper-floor.log" "${PIN_PROXY[@]}" "$FLOOR_BIN" \
        "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_UPSTREAM"
    PID_FLOOR=$LAST_PID
    wait_http "hyper-floor" "http://127.0.0.1:$P_FLOOR/" "$PID_FLOOR"
    # For reference only: what the load generator lets a proxy that costs almost nothing show.
    start_bg relay-floor "$TMP/relay-floor.log" "${PIN_PROXY[@]}" "$RELAY_BIN" \
        "127.0.0.1:$P_RELAY" "127.0.0.1:$P_UPSTREAM"
    PID_RELAY=$LAST_PID
    wait_http "relay-floor" "http://127.0.0.1:$P_RELAY/" "$PID_RELAY"
    expect_status "keyway" 200 "http://127.0.0.1:$P_KEYWAY/"
    expect_status "keyway" 401 "http://127.0.0.1:$P_KEYWAY/keyed/x"
    expect_status "keyway" 401 "http://127.0.0.1:$P_KEYWAY/keyed/x" -H "x-api-key: wrong-$API_KEY"
    expect_status "keyway" 200 "http://127.0.0.1:$P_KEYWAY/keyed/x" -H "x-api-key: $API_KEY"
    for path in jwt-hs jwt-rs; do
        expect_status "keyway" 401 "http://127.0.0.1:$P_KEYWAY/$path/x"
        expect_status "keyway" 401 "http://127.0.0.1:$P_KEYWAY/$path/x" -H "Authorization: Bearer ${TOKEN_HS}x"
    done
    expect_status "keyway" 200 "http://127.0.0.1:$P_KEYWAY/jwt-hs/x" -H "Authorization: Bearer $TOKEN_HS"
    expect_status "keyway" 200 "http://127.0.0.1:$P_KEYWAY/jwt-rs/x" -H "Authorization: Bearer $TOKEN_RS"
fi

# -------------------------------------------------------------- benchmarks --
# The process whose CPU time each target's requests cost (nginx: its one worker).
PID_NGINX_WORKER=$(child_pids "$PID_NGINX" | head -n 1)
[[ -n $PID_NGINX_WORKER ]] || die "cannot find nginx proxy worker pid"
for name in nginx nginx-fwd-headers nginx-log; do CPU_PID[$name]=$PID_NGINX_WORKER; done
for name in haproxy haproxy-jwt-hs256 haproxy-jwt-rs256; do CPU_PID[$name]=$PID_HAPROXY; done
if [[ $SKIP_KEYWAY != 1 ]]; then
    CPU_PID[hyper-floor]=$PID_FLOOR
    CPU_PID[relay-floor]=$PID_RELAY
    for name in keyway keyway-apikey keyway-jwt-hs256 keyway-jwt-rs256; do
        CPU_PID[$name]=$PID_KEYWAY
    done
    CPU_PID[keyway-log]=$PID_KEYWAY_LOG
fi
# all_targets: one round over every target, in a fixed order.
all_targets() {
    bench_target nginx "http://127.0.0.1:$P_NGINX/"
    bench_target nginx-fwd-headers "http://127.0.0.1:$P_NGINX_FWD/"
    bench_target nginx-log "http://127.0.0.1:$P_NGINX_LOG/"
    bench_target haproxy "http://127.0.0.1:$P_HAPROXY/"
    if [[ $SKIP_KEYWAY != 1 ]]; then
        bench_target hyper-floor "http://127.0.0.1:$P_FLOOR/"
        bench_target relay-floor "http://127.0.0.1:$P_RELAY/"
        bench_target keyway "http://127.0.0.1:$P_KEYWAY/"
        bench_target keyway-log "http://127.0.0.1:$P_KEYWAY_LOG/"
        bench_target keyway-apikey "http://127.0.0.1:$P_KEYWAY/keyed/x" -H "x-api-key: $API_KEY"
    fi
    bench_target haproxy-jwt-hs256 "http://127.0.0.1:$P_HAPROXY_JWT/jwt-hs/x" -H "Authorization: Bearer $TOKEN_HS"
    bench_target haproxy-jwt-rs256 "http://127.0.0.1:$P_HAPROXY_JWT/jwt-rs/x" -H "Authorization: Bearer $TOKEN_RS"
    if [[ $SKIP_KEYWAY != 1 ]]; then
        bench_target keyway-jwt-hs256 "http://127.0.0.1:$P_KEYWAY/jwt-hs/x" -H "Authorization: Bearer $TOKEN_HS"
        bench_target keyway-jwt-rs256 "http://127.0.0.1:$P_KEYWAY/jwt-rs/x" -H "Authorization: Bearer $TOKEN_RS"
    fi
}
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    all_targets
done
for name in "${ORDER[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the per-round lists is intended
    RPS[$name]=$(median ${RPS_ROUNDS[$name]})
    # shellcheck disable=SC2086
    P50[$name]=$(median ${P50_ROUNDS[$name]})
    # shellcheck disable=SC2086
    P99[$name]=$(median ${P99_ROUNDS[$name]})
    if [[ -n ${CPU_ROUNDS[$name]:-} ]]; then
        # shellcheck disable=SC2086
        CPU[$name]=$(median ${CPU_ROUNDS[$name]})
    fi
done

# ---------------------------------------------------- idle-connection memory --
# nginx: the worker (child of the master) holds the connections.
measure_idle nginx "$P_NGINX" "$PID_NGINX_WORKER"
measure_idle haproxy "$P_HAPROXY" "$PID_HAPROXY"
if [[ $SKIP_KEYWAY != 1 ]]; then
    measure_idle keyway "$P_KEYWAY" "$PID_KEYWAY"
fi
check_all_alive "after idle-connection test"

# ------------------------------------------------------------------ report --
val() { # val ARRAY_NAME KEY -> value or empty
    local -n arr=$1
    printf '%s' "${arr[$2]:-}"
}

echo
echo "== keyway proxy benchmark =="
printf '  %-10s %s\n' \
    "date" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "cpu" "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null) ($(nproc) cpus)" \
    "pinning" "$PINNING" \
    "wrk" "-t$WRK_THREADS -c$WRK_CONNS -d$DURATION --latency (after ${WARMUP} warm-up), $ROUNDS interleaved round(s), median" \
    "nginx" "$(nginx -v 2>&1 | sed 's/^nginx version: //')" \
    "haproxy" "$(haproxy -v 2>&1 | awk 'NR == 1 { print $3 }')" \
    "keyway" "$([[ $SKIP_KEYWAY == 1 ]] && echo skipped || echo "$KEYWAY_BIN")"
echo
printf '  %-18s %12s %10s %10s %8s %12s  %s\n' target "req/s" "p50 us" "p99 us" "sockerr" \
    "cpu us/req" "req/s per round"
for name in "${ORDER[@]}"; do
    awk -v n="$name" -v r="${RPS[$name]}" -v a="${P50[$name]}" -v b="${P99[$name]}" -v e="${ERRS[$name]}" \
        -v c="${CPU[$name]:-n/a}" -v rounds="${RPS_ROUNDS[$name]}" \
        'BEGIN {
            k = split(rounds, v, " "); list = ""
            for (i = 1; i <= k; i++) list = list sprintf("%s%.0f", (i > 1 ? " " : ""), v[i])
            printf "  %-18s %12.0f %10.0f %10.0f %8d %12s  %s\n", n, r, a, b, e, c, list
        }'
done
echo "  (cpu us/req: user + kernel time of the proxy process per request, median of the rounds)"

echo
echo "idle keep-alive connections ($IDLE_CONNS per proxy; MB = kB/1024):"
printf '  %-16s %10s %10s %14s %12s %10s\n' proxy "VmHWM MB" "VmRSS MB" "RSS before MB" "established" "held open"
for name in "${IDLE_ORDER[@]}"; do
    printf '  %-16s %10s %10s %14s %12s %10s\n' "$name" \
        "$(kb_to_mb "${IDLE_HWM[$name]}")" "$(kb_to_mb "${IDLE_RSS[$name]}")" \
        "$(kb_to_mb "${IDLE_RSS0[$name]}")" "${IDLE_ESTAB[$name]}" "${IDLE_OPEN[$name]:-?}"
done

echo
echo "keyway targets:"
check_ratio "keyway/nginx req/s" "$(ratio "$(val RPS keyway)" "$(val RPS nginx)")" ">=" "$TARGET_RPS_VS_NGINX"
check_ratio "keyway/haproxy req/s" "$(ratio "$(val RPS keyway)" "$(val RPS haproxy)")" ">=" "$TARGET_RPS_VS_HAPROXY"
check_ratio "keyway-p99/nginx-p99" "$(ratio "$(val P99 keyway)" "$(val P99 nginx)")" "<=" "$TARGET_P99_VS_NGINX"
check_ratio "keyway-p99/haproxy-p99" "$(ratio "$(val P99 keyway)" "$(val P99 haproxy)")" "<=" "$TARGET_P99_VS_HAPROXY"
check_ratio "keyway-apikey/keyway-plain req/s" "$(ratio "$(val RPS keyway-apikey)" "$(val RPS keyway)")" ">=" "$TARGET_APIKEY_VS_PLAIN"
check_ratio "keyway-HS256/haproxy-HS256 req/s" "$(ratio "$(val RPS keyway-jwt-hs256)" "$(val RPS haproxy-jwt-hs256)")" ">=" "$TARGET_JWT_HS_VS_HAPROXY"
check_ratio "keyway-RS256/haproxy-RS256 req/s" "$(ratio "$(val RPS keyway-jwt-rs256)" "$(val RPS haproxy-jwt-rs256)")" ">=" "$TARGET_JWT_RS_VS_HAPROXY"
check_ratio "keyway-RS256/keyway-plain req/s" "$(ratio "$(val RPS keyway-jwt-rs256)" "$(val RPS keyway)")" ">=" "$TARGET_JWT_RS_VS_PLAIN"
printf '  %-36s %9s   (reference, no target)\n' "keyway/nginx-fwd-headers req/s" \
    "$(ratio "$(val RPS keyway)" "$(val RPS nginx-fwd-headers)")"
printf '  %-36s %9s   (reference: the cost of keyway stages)\n' "keyway/hyper-floor req/s" \
    "$(ratio "$(val RPS keyway)" "$(val RPS hyper-floor)")"
printf '  %-36s %9s   (reference: what the HTTP stack allows)\n' "hyper-floor/nginx req/s" \
    "$(ratio "$(val RPS hyper-floor)" "$(val RPS nginx)")"
printf '  %-36s %9s   (reference: the load generator'"'"'s limit; near 1.0, nginx is at it)\n' "relay-floor/nginx req/s" \
    "$(ratio "$(val RPS relay-floor)" "$(val RPS nginx)")"
printf '  %-36s %9s   (reference: CPU time per request, lower is better)\n' "relay-floor/nginx cpu per request" \
    "$(ratio "$(val CPU relay-floor)" "$(val CPU nginx)")"
printf '  %-36s %9s   (reference: CPU time per request, lower is better)\n' "keyway/nginx cpu per request" \
    "$(ratio "$(val CPU keyway)" "$(val CPU nginx)")"
printf '  %-36s %9s   (reference: CPU time per request, lower is better)\n' "keyway/hyper-floor cpu per request" \
    "$(ratio "$(val CPU keyway)" "$(val CPU hyper-floor)")"
check_ratio "keyway-log/keyway cpu per request" "$(ratio "$(val CPU keyway-log)" "$(val CPU keyway)")" "<=" "$TARGET_LOG_CPU"
printf '  %-36s %9s   (reference: the buffered access log of nginx)\n' "nginx-log/nginx cpu per request" \
    "$(ratio "$(val CPU nginx-log)" "$(val CPU nginx)")"
if [[ $SKIP_KEYWAY != 1 ]]; then
    # Every request has its line, complete and parseable (the log is flushed within a second).
    sleep 1.5
    LOG_LINES=$(wc -l <"$TMP/keyway-access.log")
    # Every line must parse as JSON on its own and carry the access fields.
    LOG_BAD=$(python3 -c '
import json, sys
bad = 0
for line in open(sys.argv[1], "rb"):
    try:
        v = json.loads(line)
        bad += not (v.get("target") == "keyway::access" and "request_id" in v and "duration_us" in v)
    except ValueError:
        bad += 1
print(bad)
' "$TMP/keyway-access.log")
    printf '  %-36s %9s   (%s lines not whole JSON)\n' "keyway access log lines" "$LOG_LINES" "$LOG_BAD"
    [[ $LOG_BAD == 0 ]] || N_MISS=$((N_MISS + 1))
fi
check_ratio "keyway peak RSS MB, $IDLE_CONNS idle conns" "$(kb_to_mb "$(val IDLE_HWM keyway)")" "<=" "$TARGET_PEAK_RSS_MB"
echo
echo "summary: $N_PASS PASS, $N_MISS MISS, $N_NA n/a"
