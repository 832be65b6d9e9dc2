#!/usr/bin/env bash
# bench/lib.sh -- helpers shared by bench/proxy.sh and bench/mux.sh (sourced, not run).

log() { printf '[bench] %s\n' "$*" >&2; }

die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# alive PID: process exists and is not a zombie (our dead children stay
# zombies until reaped, so `kill -0` alone is not enough).
alive() {
    local st
    st=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

# cpu_ticks PID: user + kernel clock ticks the process has used (fields 14 and 15 of its stat;
# the name in parentheses may hold spaces, so fields are counted after it).
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" ||
        die "cannot read /proc/$1/stat"
}

# forget_pid PID: drop an already-reaped pid from the cleanup list (so cleanup
# can never signal an unrelated process that reused the pid).
forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Free loopback ports: bind them all at once (so they are distinct) to port 0.
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

kb_to_mb() { awk -v k="${1:-}" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.1f\n", k / 1024; else print "n/a" }'; }

# median VALUES...: the middle value (mean of the two middle ones for an even count)
median() {
    printf '%s\n' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# proc_kb PID FIELD: value in kB of VmHWM / VmRSS from /proc/PID/status
proc_kb() {
    awk -v f="$2:" '$1 == f { print $2; found = 1 } END { exit !found }' "/proc/$1/status" ||
        die "cannot read $2 from /proc/$1/status"
}

# ratio A B -> A/B with 3 decimals, or n/a
ratio() {
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) print "n/a"
        else printf "%.3f\n", a / b
    }'
}

N_PASS=0 N_MISS=0 N_NA=0
check_ratio() {
    local label=$1 value=$2 op=$3 thr=$4 verdict
    verdict=$(awk -v v="$value" -v op="$op" -v t="$thr" 'BEGIN {
        if (v !~ /^[0-9.]+$/) { print "n/a"; exit }
        ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0)
        print (ok ? "PASS" : "MISS")
    }')
    case $verdict in
        PASS) N_PASS=$((N_PASS + 1)) ;;
        MISS) N_MISS=$((N_MISS + 1)) ;;
        *) N_NA=$((N_NA + 1)) ;;
    esac
    printf "  %-${RATIO_LABEL_WIDTH:-36}s %9s   target %s %-6s %s\n" "$label" "$value" "$op" "$thr" "$verdict"
}
