#!/usr/bin/env bash
# bench/mux.sh -- keyway's WebSocket multiplexer (keyway.mux.v1): message rate against direct
# WebSocket routes, 1,000 streams on one connection, and memory while a client reads nothing.
#
# One run:
#   1. builds keyway (cargo build --release) unless KEYWAY_BIN is set, and the ws_echo and
#      mux_client examples;
#   2. starts examples/ws_echo (echoes every message; with --flood, a connection that receives
#      the text "flood" sends 64 KiB binary messages until it is closed) and keyway
#      (workers: 1) with three routes to it:
#        /ws/      api_key authenticator: a byte tunnel (an API key never expires)
#        /jwt/ws/  consumer-mode jwt authenticator, token minted with `keyway token --ttl 1h`:
#                  the frame-aware relay (the token has an exp)
#        /mux      the multiplexer (mux: {max_streams: 1024}), api_key authenticator; its
#                  streams open /ws/echo, which the /ws/ route decides;
#   3. checks that a mux stream echoes, that a handshake without the key is refused, and (from
#      keyway's access log) that /ws/ is relayed as bytes and /jwt/ws/ as frames;
#   4. runs ROUNDS interleaved rounds (each target's first run after a 1 s warm-up) of
#        direct-bytes   mux_client load --direct --streams 100 on /ws/echo
#        direct-frames  the same on /jwt/ws/echo
#        mux            mux_client load --streams 100 on /ws/echo, over one connection
#      for DURATION each: a closed loop, one 64-byte binary message in flight per stream or
#      connection. Each target reports its median message rate and keyway's CPU time (user +
#      kernel, /proc/PID/stat) per message;
#   5. 1,000 streams on one mux connection for DURATION_LONG: messages, errors, keyway's peak
#      RSS (VmHWM, reset first through /proc/PID/clear_refs where allowed, and VmRSS sampled
#      every second);
#   6. a stall client: 1,000 streams whose upstreams flood, the connection not read at all for
#      STALL_HOLD. keyway's RSS every second, its max, and whether it stopped growing; then,
#      once the client has gone, whether every upstream connection closed and keyway still
#      answers;
#   7. prints a summary, with PASS/MISS against the targets.
#
# Exit status: 0 when the measurement completed without errors (even if a target is MISSed);
# non-zero when anything failed to build, start or answer, when a load saw any error (an error
# frame, a stream closed under it, a wrong echo, a failed connection), or when upstream
# connections outlived the stall client.
#
# Environment:
#   KEYWAY_BIN=path     use this keyway binary instead of building one
#   DURATION=10s        each target's duration per round
#   ROUNDS=3            interleaved rounds; each target reports the median of its rounds
#   DURATION_LONG=30s   the 1,000-stream run
#   STALL_HOLD=10s      how long the stall client does not read
#   BENCH_SMOKE=1       quick run: 1 round of 2s, DURATION_LONG=3s, STALL_HOLD=3s (overrides)
#   BENCH_KEEP_TMP=1    keep the temp dir (config, logs, raw results)
#
# CPU pinning: if `taskset` exists and there are >= 2 CPUs, keyway runs on core 0 while the
# load generator and the echo server share core 1, as in bench/proxy.sh. The "load cpu %"
# column says how busy that core was: near 100, the load side limits the rate, not keyway.

set -euo pipefail

cd "$(dirname "$0")/.."
REPO_ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}

# ----------------------------------------------------------------- settings --
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
DURATION_LONG=${DURATION_LONG:-30s}
STALL_HOLD=${STALL_HOLD:-10s}
if [[ ${BENCH_SMOKE:-0} == 1 ]]; then DURATION=2s ROUNDS=1 DURATION_LONG=3s STALL_HOLD=3s; fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 1; }
for d in DURATION DURATION_LONG STALL_HOLD; do
    [[ ${!d} =~ ^[0-9]+(ms|s|m)$ ]] || { echo "$d must look like 10s, 500ms or 1m" >&2; exit 1; }
done
WARMUP=1s
STREAMS=100         # streams (or direct connections) of the rate rows
LONG_STREAMS=1000   # streams on one connection in the long run and the stall
SIZE=64             # payload bytes per message
READY_TIMEOUT=15    # seconds allowed for a server to start answering
API_KEY="kw-mux-bench-$$-0123456789abcdef"
JWT_SECRET="kw-mux-bench-jwt-secret-$$-0123456789abcdef"

TARGET_MUX_VS_DIRECT=0.5

# ------------------------------------------------------------------ helpers --
# shellcheck source=bench/lib.sh
source bench/lib.sh

for tool in curl python3 sha256sum awk ss; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool not found: $tool"
done

# 1,000 upstream connections in keyway and in the echo server, plus the client's.
if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < 4096)); then
    ulimit -n 4096 || die "cannot raise 'ulimit -n' to 4096 (hard limit $(ulimit -Hn))"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keyway-mux-bench.XXXXXX")

declare -a PIDS=()          # every background process we started, in order
declare -A PID_NAME=()      # pid -> human name
declare -a ORDER=()         # targets in the order they first ran
declare -A RATE_ROUNDS=() CPU_ROUNDS=() LOAD_ROUNDS=() RATE=() CPU=() LOAD=() ERRS=()
TOTAL_ERRORS=0
CLK_TCK=$(getconf CLK_TCK)

# stop_pid PID: TERM, poll up to 5s, then KILL.
stop_pid() {
    local pid=$1 i
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
}

cleanup() {
    local rc=$? i f
    trap - EXIT INT TERM
    set +e
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    if ((rc != 0)); then
        for f in "$TMP"/*.log "$TMP"/*.err; do
            [[ -s $f ]] || continue
            printf '[bench] ---- last lines of %s ----\n' "${f##*/}" >&2
            tail -n 15 "$f" >&2
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

# start_bg NAME OUT ERR CMD...: run CMD in the background, stdout to OUT and stderr to ERR,
# registered for cleanup; its pid is left in LAST_PID (`taskset` execs, so it is the real one).
start_bg() {
    local name=$1 out=$2 err=$3
    shift 3
    "$@" >"$out" 2>"$err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    PID_NAME[$LAST_PID]=$name
}

# The load generator's CPU time: `times >FILE` in this shell (never in $(...) or a pipe, which
# would be a subshell with children of its own) before and after it runs, and
# times_us FILE: the user + kernel time of this shell's reaped children, in microseconds.
times_us() {
    awk 'NR == 2 {
        split($1, u, /[ms]/); split($2, s, /[ms]/)
        printf "%.0f\n", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1000000
    }' "$1"
}

now_us() { echo $(($(date +%s%N) / 1000)); }

# reset_hwm PID: VmHWM back to the current RSS (Linux clear_refs 5); false where not allowed.
reset_hwm() { { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null; }

# json_num KEY FILE: a number field of mux_client's one-line JSON result.
json_num() { sed -nE "s/.*\"$1\":([0-9.]+).*/\1/p" "$2" | head -n 1; }

RATIO_LABEL_WIDTH=40   # check_ratio's label column (bench/lib.sh)

# ------------------------------------------------------------------ pinning --
if command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
    PIN_PROXY=(taskset -c 0)  # keyway: core 0
    PIN_LOAD=(taskset -c 1)   # ws_echo and mux_client: core 1
    PINNING="keyway on core 0; mux_client + ws_echo on core 1"
else
    PIN_PROXY=()
    PIN_LOAD=()
    PINNING="none (taskset missing or < 2 CPUs)"
fi

# -------------------------------------------------------------------- build --
if [[ -n ${KEYWAY_BIN:-} ]]; then
    [[ -x $KEYWAY_BIN ]] || die "KEYWAY_BIN=$KEYWAY_BIN is not an executable file"
else
    log "building keyway (cargo build --release)"
    cargo build --release
    KEYWAY_BIN=$TARGET_DIR/release/keyway
    [[ -x $KEYWAY_BIN ]] || die "build did not produce $KEYWAY_BIN"
fi
log "building ws_echo and mux_client (cargo build --release --example ...)"
cargo build --release --example ws_echo --example mux_client
ECHO_BIN=$TARGET_DIR/release/examples/ws_echo
CLIENT_BIN=$TARGET_DIR/release/examples/mux_client
[[ -x $ECHO_BIN && -x $CLIENT_BIN ]] || die "build did not produce $ECHO_BIN and $CLIENT_BIN"

# ---------------------------------------------------------------- upstream --
start_bg ws_echo "$TMP/echo.out" "$TMP/echo.err" "${PIN_LOAD[@]}" "$ECHO_BIN" 0 --workers 1 --flood
PID_ECHO=$LAST_PID
deadline=$((SECONDS + READY_TIMEOUT))
until ECHO_ADDR=$(head -n 1 "$TMP/echo.out") && [[ $ECHO_ADDR =~ ^127\.0\.0\.1:[0-9]+$ ]]; do
    alive "$PID_ECHO" || die "ws_echo exited during startup: $(cat "$TMP/echo.err")"
    ((SECONDS < deadline)) || die "ws_echo printed no address after ${READY_TIMEOUT}s"
    sleep 0.05
done
ECHO_PORT=${ECHO_ADDR##*:}
log "ws_echo listening on $ECHO_ADDR"

# ------------------------------------------------------------------ keyway --
read -r P_KEYWAY < <(free_ports 1) || die "cannot allocate a free port"
[[ $P_KEYWAY =~ ^[0-9]+$ ]] || die "cannot allocate a free port (got: $P_KEYWAY)"
KEY_HASH=$(printf %s "$API_KEY" | sha256sum | awk '{ print $1 }')
[[ $KEY_HASH =~ ^[0-9a-f]{64}$ ]] || die "sha256sum produced: $KEY_HASH"
# The access log names each WebSocket's relay ("bytes" or "frames"), checked below; it writes a
# line per handshake and per mux stream, never per message, so it costs the rates nothing.
cat >"$TMP/keyway.yaml" <<EOF
listen: 127.0.0.1:$P_KEYWAY
workers: 1
access_log: true
upstreams:
  echo: {url: "http://$ECHO_ADDR"}
consumers:
  - name: bench
    api_keys: ["sha256:$KEY_HASH"]
  - name: bench-jwt
    jwt: {key: bench-jwt, secret: "$JWT_SECRET"}
authenticators:
  key: {type: api_key, header: x-api-key}
  jwt: {type: jwt}
routes:
  - {name: ws-bytes, match: {path_prefix: /ws/}, upstream: echo, auth: [key]}
  - {name: ws-frames, match: {path_prefix: /jwt/ws/}, upstream: echo, auth: [jwt]}
  # 1,000 streams on one connection: above the default of 256.
  - {name: mux, match: {path: /mux}, mux: {max_streams: 1024}, auth: [key]}
EOF
"$KEYWAY_BIN" check -c "$TMP/keyway.yaml" >"$TMP/check.log" 2>&1 ||
    die "keyway check refused the config: $(cat "$TMP/check.log")"
TOKEN=$("$KEYWAY_BIN" token --consumer bench-jwt -c "$TMP/keyway.yaml" --ttl 1h 2>"$TMP/token.err") ||
    die "keyway token failed: $(cat "$TMP/token.err")"
[[ $TOKEN =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || die "keyway token printed: $TOKEN"

start_bg keyway "$TMP/keyway.out" "$TMP/keyway.log" "${PIN_PROXY[@]}" "$KEYWAY_BIN" run -c "$TMP/keyway.yaml"
PID_KEYWAY=$LAST_PID
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
    alive "$PID_KEYWAY" || die "keyway exited during startup"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$P_KEYWAY/ws/echo" 2>/dev/null || true)
    [[ $code =~ ^[1-5][0-9][0-9]$ ]] && break
    ((SECONDS < deadline)) || die "keyway not answering on port $P_KEYWAY after ${READY_TIMEOUT}s"
    sleep 0.05
done
log "keyway listening on 127.0.0.1:$P_KEYWAY (pid $PID_KEYWAY)"
MUX_URL="ws://127.0.0.1:$P_KEYWAY/mux"
KEY_HEADER="x-api-key: $API_KEY"
JWT_HEADER="authorization: Bearer $TOKEN"

# ------------------------------------------------------------------- checks --
# client ARGS...: mux_client on the load core.
client() { "${PIN_LOAD[@]}" "$CLIENT_BIN" "$@"; }

out=$(client "$MUX_URL" -H "$KEY_HEADER" open /ws/echo --send hello 2>&1) ||
    die "a mux stream to /ws/echo failed: $out"
grep -q '"data":"hello"' <<<"$out" || die "a mux stream to /ws/echo did not echo: $out"
log "ok: a mux stream to /ws/echo echoes"
st=0
out=$(client "$MUX_URL" open /ws/echo 2>&1) || st=$?
[[ $st == 2 && $out == *"401"* ]] || die "a mux handshake without a key was not refused with 401: $out"
log "ok: a mux handshake without a key is refused"
out=$(client load "$MUX_URL" -H "$KEY_HEADER" --path /ws/echo --direct --streams 1 --duration 200ms 2>&1) ||
    die "a direct WebSocket to /ws/echo failed: $out"
out=$(client load "$MUX_URL" -H "$JWT_HEADER" --path /jwt/ws/echo --direct --streams 1 --duration 200ms 2>&1) ||
    die "a direct WebSocket to /jwt/ws/echo failed: $out"
deadline=$((SECONDS + 5))
until grep -qE '"route":"ws-bytes".*"relay":"bytes"' "$TMP/keyway.log" &&
    grep -qE '"route":"ws-frames".*"relay":"frames"' "$TMP/keyway.log"; do
    ((SECONDS < deadline)) || die "keyway's access log does not show /ws/ as bytes and /jwt/ws/ as frames"
    sleep 0.1
done
log "ok: /ws/ is a byte tunnel, /jwt/ws/ the frame-aware relay"

# -------------------------------------------------------------- rate rows --
# run_load NAME DURATION ARGS...: one mux_client load run; leaves in R_MESSAGES, R_ERRORS,
# R_RATE, R_CPU (keyway CPU us per message), R_LOAD (load side CPU %, client + echo).
run_load() {
    local name=$1 duration=$2 out err st=0 k0 k1 e0 e1 w0 w1 c0 c1
    shift 2
    out=$TMP/load-$name.json
    err=$TMP/load-$name.err
    k0=$(cpu_ticks "$PID_KEYWAY")
    e0=$(cpu_ticks "$PID_ECHO")
    w0=$(now_us)
    times >"$TMP/times0"
    client load "$MUX_URL" --duration "$duration" --size "$SIZE" "$@" >"$out" 2>"$err" || st=$?
    times >"$TMP/times1"
    c0=$(times_us "$TMP/times0")
    c1=$(times_us "$TMP/times1")
    w1=$(now_us)
    e1=$(cpu_ticks "$PID_ECHO")
    k1=$(cpu_ticks "$PID_KEYWAY")
    # 1: completed with errors (reported); anything else: the client itself failed.
    ((st <= 1)) || die "mux_client load failed for $name (exit $st): $(cat "$err")"
    R_MESSAGES=$(json_num messages "$out")
    R_ERRORS=$(json_num errors "$out")
    R_RATE=$(json_num rate "$out")
    [[ -n $R_MESSAGES && -n $R_ERRORS && -n $R_RATE ]] || die "no result from mux_client for $name: $(cat "$out" "$err")"
    R_CPU=$(awk -v t=$((k1 - k0)) -v hz="$CLK_TCK" -v m="$R_MESSAGES" \
        'BEGIN { if (m > 0) printf "%.1f\n", t * 1000000 / hz / m; else print "n/a" }')
    R_LOAD=$(awk -v c=$((c1 - c0)) -v e=$((e1 - e0)) -v hz="$CLK_TCK" -v w=$((w1 - w0)) \
        'BEGIN { printf "%.0f\n", (c + e * 1000000 / hz) * 100 / w }')
    if ((R_ERRORS > 0)); then
        log "ERRORS: $name: $R_ERRORS; mux_client said: $(head -n 5 "$err" | tr '\n' ' ')"
        TOTAL_ERRORS=$((TOTAL_ERRORS + R_ERRORS))
    fi
}

# bench_target NAME ARGS...: one round of one target (after a warm-up on its first).
bench_target() {
    local name=$1
    shift
    if [[ -z ${RATE_ROUNDS[$name]:-} ]]; then
        log "warm-up: $name ($WARMUP)"
        run_load "$name-warmup" "$WARMUP" "$@"
        ORDER+=("$name")
    fi
    log "bench:   $name ($DURATION)"
    run_load "$name" "$DURATION" "$@"
    log "         $name: $R_RATE msg/s, keyway $R_CPU us/msg, load side ${R_LOAD}% cpu, $R_ERRORS errors"
    RATE_ROUNDS[$name]+="$R_RATE "
    CPU_ROUNDS[$name]+="$R_CPU "
    LOAD_ROUNDS[$name]+="$R_LOAD "
    ERRS[$name]=$((${ERRS[$name]:-0} + R_ERRORS))
}

for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    bench_target direct-bytes -H "$KEY_HEADER" --path /ws/echo --streams "$STREAMS" --direct
    bench_target direct-frames -H "$JWT_HEADER" --path /jwt/ws/echo --streams "$STREAMS" --direct
    bench_target mux -H "$KEY_HEADER" --path /ws/echo --streams "$STREAMS"
done
for name in "${ORDER[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the per-round lists is intended
    RATE[$name]=$(median ${RATE_ROUNDS[$name]})
    # shellcheck disable=SC2086
    CPU[$name]=$(median ${CPU_ROUNDS[$name]})
    # shellcheck disable=SC2086
    LOAD[$name]=$(median ${LOAD_ROUNDS[$name]})
done

# ---------------------------------------------------- 1,000 streams, one mux --
# sample_rss PID CLIENT_PID: VmRSS of PID every second while CLIENT_PID runs; the samples (kB)
# are left in SAMPLES.
sample_rss() {
    SAMPLES=()
    while alive "$2"; do
        alive "$1" || die "keyway died under load"
        SAMPLES+=("$(proc_kb "$1" VmRSS)")
        sleep 1
    done
}
max_of() { printf '%s\n' "$@" | sort -n | tail -n 1; }

log "long:    $LONG_STREAMS streams on one mux connection ($DURATION_LONG)"
LONG_RSS0=$(proc_kb "$PID_KEYWAY" VmRSS)
HWM_NOTE="VmHWM reset before the run"
reset_hwm "$PID_KEYWAY" || HWM_NOTE="VmHWM since keyway started (clear_refs not allowed)"
k0=$(cpu_ticks "$PID_KEYWAY")
start_bg mux-long "$TMP/long.json" "$TMP/long.err" "${PIN_LOAD[@]}" "$CLIENT_BIN" load "$MUX_URL" \
    -H "$KEY_HEADER" --path /ws/echo --streams "$LONG_STREAMS" --duration "$DURATION_LONG" --size "$SIZE"
lpid=$LAST_PID
sample_rss "$PID_KEYWAY" "$lpid"
st=0
wait "$lpid" || st=$?
forget_pid "$lpid"
((st <= 1)) || die "mux_client load ($LONG_STREAMS streams) failed (exit $st): $(cat "$TMP/long.err")"
k1=$(cpu_ticks "$PID_KEYWAY")
LONG_HWM=$(proc_kb "$PID_KEYWAY" VmHWM)
LONG_RSS_MAX=$(max_of "${SAMPLES[@]}")
LONG_MESSAGES=$(json_num messages "$TMP/long.json")
LONG_ERRORS=$(json_num errors "$TMP/long.json")
LONG_RATE=$(json_num rate "$TMP/long.json")
[[ -n $LONG_MESSAGES && -n $LONG_ERRORS ]] || die "no result from the long run: $(cat "$TMP/long.json" "$TMP/long.err")"
LONG_CPU=$(awk -v t=$((k1 - k0)) -v hz="$CLK_TCK" -v m="$LONG_MESSAGES" \
    'BEGIN { if (m > 0) printf "%.1f\n", t * 1000000 / hz / m; else print "n/a" }')
if ((LONG_ERRORS > 0)); then
    log "ERRORS: long run: $LONG_ERRORS; mux_client said: $(head -n 5 "$TMP/long.err" | tr '\n' ' ')"
    TOTAL_ERRORS=$((TOTAL_ERRORS + LONG_ERRORS))
fi
log "         $LONG_MESSAGES messages, $LONG_ERRORS errors, peak RSS $(kb_to_mb "$LONG_HWM") MB"

# -------------------------------------------------------------------- stall --
# upstream_conns: keyway's established connections to the echo server.
upstream_conns() { ss -Htn state established "( dport = :$ECHO_PORT )" | wc -l; }

log "stall:   $LONG_STREAMS flooding streams, not read for $STALL_HOLD"
STALL_RSS0=$(proc_kb "$PID_KEYWAY" VmRSS)
reset_hwm "$PID_KEYWAY" || true
start_bg mux-stall "$TMP/stall.json" "$TMP/stall.err" "${PIN_LOAD[@]}" "$CLIENT_BIN" stall "$MUX_URL" \
    -H "$KEY_HEADER" --path /ws/echo --streams "$LONG_STREAMS" --hold "$STALL_HOLD"
spid=$LAST_PID
# The samples of the hold only: from the client's "flooding" line on.
deadline=$((SECONDS + 60))
until grep -q 'flooding' "$TMP/stall.err"; do
    alive "$spid" || die "the stall client ended before flooding: $(cat "$TMP/stall.err")"
    ((SECONDS < deadline)) || die "the stall client did not open its streams within 60s"
    sleep 0.1
done
sample_rss "$PID_KEYWAY" "$spid"
STALL_SAMPLES=("${SAMPLES[@]}")
st=0
wait "$spid" || st=$?
forget_pid "$spid"
((st <= 1)) || die "mux_client stall failed (exit $st): $(cat "$TMP/stall.err")"
STALL_OPENED=$(json_num opened "$TMP/stall.json")
STALL_ERRORS=$(json_num errors "$TMP/stall.json")
if ((${STALL_ERRORS:-1} > 0)); then
    log "ERRORS: stall: ${STALL_ERRORS:-?}; mux_client said: $(head -n 5 "$TMP/stall.err" | tr '\n' ' ')"
    TOTAL_ERRORS=$((TOTAL_ERRORS + ${STALL_ERRORS:-1}))
fi
STALL_HWM=$(proc_kb "$PID_KEYWAY" VmHWM)
STALL_MAX=$(max_of "${STALL_SAMPLES[@]}")
# Stopped growing: the last three samples of the hold within 2% (or 1 MB) of each other.
STALL_BOUNDED=$(printf '%s\n' "${STALL_SAMPLES[@]}" | tail -n 3 | awk '
    NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 }
    END { if (NR < 2) print "n/a"; else print ((hi - lo <= 1024 || hi - lo <= hi * 0.02) ? "yes" : "no") }')
# The client reset its connection: every stream, and its upstream connection, must end.
deadline=$((SECONDS + 15))
while (($(upstream_conns) > 0 && SECONDS < deadline)); do sleep 0.2; done
STALL_LEFT=$(upstream_conns)
sleep 1
STALL_RSS_AFTER=$(proc_kb "$PID_KEYWAY" VmRSS)
out=$(client "$MUX_URL" -H "$KEY_HEADER" open /ws/echo --send hello 2>&1) ||
    die "after the stall, a mux stream failed: $out"
grep -q '"data":"hello"' <<<"$out" || die "after the stall, a mux stream did not echo: $out"
alive "$PID_KEYWAY" || die "keyway died"

# ------------------------------------------------------------------ report --
echo
echo "== keyway multiplexer benchmark =="
printf '  %-10s %s\n' \
    "date" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "cpu" "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null) ($(nproc) cpus)" \
    "load" "$(cut -d' ' -f1-3 /proc/loadavg) (load average at the end)" \
    "pinning" "$PINNING" \
    "rounds" "$ROUNDS interleaved round(s) of $DURATION per target (after a $WARMUP warm-up), median" \
    "messages" "closed loop, one $SIZE-byte binary message in flight per stream or connection" \
    "keyway" "$KEYWAY_BIN (workers: 1)"
echo
printf '  %-14s %6s %10s %12s %12s %7s  %s\n' target streams "msg/s" "cpu us/msg" "load cpu %" errors "msg/s per round"
for name in "${ORDER[@]}"; do
    printf '  %-14s %6s %10.0f %12s %12s %7s  %s\n' "$name" "$STREAMS" "${RATE[$name]}" "${CPU[$name]}" \
        "${LOAD[$name]}" "${ERRS[$name]}" "${RATE_ROUNDS[$name]% }"
done
echo "  (cpu us/msg: keyway's user + kernel time per message; load cpu %: mux_client + ws_echo,"
echo "   which share one core: near 100, the load side limits the rate. Medians of the rounds.)"
echo
echo "ratios:"
check_ratio "mux/direct-bytes msg/s" "$(ratio "${RATE[mux]}" "${RATE[direct-bytes]}")" ">=" "$TARGET_MUX_VS_DIRECT"
printf '  %-40s %9s   (reference)\n' "mux/direct-frames msg/s" "$(ratio "${RATE[mux]}" "${RATE[direct-frames]}")"
printf '  %-40s %9s   (reference: frame-aware relay vs byte tunnel)\n' "direct-frames/direct-bytes msg/s" \
    "$(ratio "${RATE[direct-frames]}" "${RATE[direct-bytes]}")"
printf '  %-40s %9s   (reference: CPU per message, lower is better)\n' "mux/direct-bytes keyway cpu per msg" \
    "$(ratio "${CPU[mux]}" "${CPU[direct-bytes]}")"
printf '  %-40s %9s   (reference: CPU per message, lower is better)\n' "direct-frames/direct-bytes cpu per msg" \
    "$(ratio "${CPU[direct-frames]}" "${CPU[direct-bytes]}")"
echo
echo "$LONG_STREAMS streams on one mux connection, $DURATION_LONG:"
printf '  %-36s %s\n' \
    "messages" "$LONG_MESSAGES ($LONG_RATE msg/s)" \
    "errors" "$LONG_ERRORS" \
    "keyway cpu us/msg" "$LONG_CPU" \
    "keyway RSS before" "$(kb_to_mb "$LONG_RSS0") MB" \
    "keyway peak RSS (VmHWM)" "$(kb_to_mb "$LONG_HWM") MB ($HWM_NOTE)" \
    "keyway max sampled VmRSS" "$(kb_to_mb "$LONG_RSS_MAX") MB"
echo
echo "stall: $LONG_STREAMS flooding streams (64 KiB messages), connection not read for $STALL_HOLD:"
stall_mb=()
for kb in "${STALL_SAMPLES[@]}"; do stall_mb+=("$(kb_to_mb "$kb")"); done
printf '  %-36s %s\n' \
    "streams opened" "${STALL_OPENED:-?} (errors: ${STALL_ERRORS:-?})" \
    "keyway RSS before" "$(kb_to_mb "$STALL_RSS0") MB" \
    "keyway RSS every second (MB)" "${stall_mb[*]}" \
    "keyway max RSS" "$(kb_to_mb "$STALL_MAX") MB (VmHWM $(kb_to_mb "$STALL_HWM") MB)" \
    "stopped growing (last 3 samples)" "$STALL_BOUNDED" \
    "keyway RSS after the client left" "$(kb_to_mb "$STALL_RSS_AFTER") MB" \
    "upstream connections left after" "$STALL_LEFT (of $LONG_STREAMS; 15 s allowed)"
if [[ $STALL_BOUNDED == no ]]; then
    echo "  (still growing at the end: a short hold may end before the flood fills every buffer)"
fi
echo
echo "summary: $N_PASS PASS, $N_MISS MISS, $N_NA n/a; $TOTAL_ERRORS errors; $STALL_LEFT upstream connections leaked"
((TOTAL_ERRORS == 0)) || die "the loads saw $TOTAL_ERRORS errors"
((STALL_LEFT == 0)) || die "$STALL_LEFT upstream connections outlived the stall client"
