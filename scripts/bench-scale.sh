#!/usr/bin/env bash
# The scale benchmark (issue 13): N MetricsExporters on one host, each with
# its own SummaryRule and a tiny local table, delivering to a stdout
# exporter. For each N it runs `kusto-metrics run` (not --once) and reports
#   manifests read  time from start to the `manifests read` log line
#   first pass      time from start to the N-th `export run` line (every
#                   exporter has run once; failed runs count, and are shown)
#   peak RSS        VmHWM of the process
#   idle CPU        utime+stime over the IDLE seconds after the first pass,
#                   as a share of one core (nothing new to read: what
#                   remains is scheduling, reload scans, state writes)
#   per exporter    peak RSS / N and first pass / N
# and prints a table. A run whose RSS passes BENCH_RSS_LIMIT_MIB is killed,
# one whose first pass takes longer than BENCH_FIRST_PASS_TIMEOUT is stopped;
# both are reported as such.
#
# Usage: scripts/bench-scale.sh [N ...]          (default: 1000 10000)
# Environment:
#   BENCH_BIN                  a built binary (else: cargo build --release)
#   BENCH_DIR                  where the deployments go (default: a temp dir, removed)
#   BENCH_IDLE_SECONDS         idle window (60)
#   BENCH_FIRST_PASS_TIMEOUT   seconds (300)
#   BENCH_RSS_LIMIT_MIB        kill above this (6144)
#   BENCH_NAMESPACES           exporters spread over this many namespaces (1)
#   BENCH_INTERVAL             spec.interval of every exporter (1m)
#   BENCH_ROWS                 rows per table (3)
set -euo pipefail
cd "$(dirname "$0")/.."

counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1000 10000)
idle_seconds=${BENCH_IDLE_SECONDS:-60}
first_pass_timeout=${BENCH_FIRST_PASS_TIMEOUT:-300}
rss_limit_kib=$(( ${BENCH_RSS_LIMIT_MIB:-6144} * 1024 ))
namespaces=${BENCH_NAMESPACES:-1}
interval=${BENCH_INTERVAL:-1m}
rows=${BENCH_ROWS:-3}
ticks_per_second=$(getconf CLK_TCK)

if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN
else
    cargo build --release -p kusto-metrics --bin kusto-metrics >&2
    bin=${CARGO_TARGET_DIR:-target}/release/kusto-metrics
fi
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }

if [ -n "${BENCH_DIR:-}" ]; then
    work=$BENCH_DIR
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
# Compiled guests survive between runs, so no run pays for compiling.
cache="$work/cache"

# deploy DIR N: a host config, N manifests (a SummaryRule and the
# MetricsExporter selecting it, by its own label) and N tables.
deploy() {
    local dir=$1 n=$2
    rm -rf "$dir"
    mkdir -p "$dir/manifests" "$dir/tables/DB"
    cat >"$dir/kusto-metrics.yaml" <<EOF
manifests: manifests
source:
  local:
    tables: tables
state: state
reloadInterval: 2s
server:
  listen: 127.0.0.1:$port
guests:
  cacheDir: $cache
exporters:
  - name: sink
    stdout: {}
EOF
    awk -v n="$n" -v dir="$dir" -v namespaces="$namespaces" -v interval="$interval" -v rows="$rows" 'BEGIN {
        for (i = 0; i < n; i++) {
            id = sprintf("%05d", i)
            ns = "ns-" (i % namespaces)
            m = dir "/manifests/e" id ".yaml"
            printf "apiVersion: adx-mon.azure.com/v1\nkind: SummaryRule\nmetadata:\n  name: r%s\n  namespace: %s\n  labels: {metrics-export: \"enabled\", team: \"t%d\", app: \"a%s\"}\nspec: {database: DB, table: T%s, body: \"T | take 1\", interval: 5m}\n---\n", id, ns, i % 100, id, id > m
            printf "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\nmetadata: {name: e%s, namespace: %s}\nspec:\n  summaryRuleSelector:\n    matchLabels: {metrics-export: \"enabled\", app: \"a%s\"}\n    matchExpressions: [{key: team, operator: Exists}]\n  exporters: [sink]\n  interval: %s\n  transform: {metricNameColumn: metric_name, valueColumn: v, timestampColumn: t, labelColumns: [host]}\n", id, ns, id, interval > m
            close(m)
            t = dir "/tables/DB/T" id ".csv"
            print "metric_name:string,v:long,t:datetime,host:string" > t
            for (r = 0; r < rows; r++)
                printf "m%s,%d,2025-06-25T10:00:%02dZ,h%d\n", id, r, r % 60, r % 3 > t
            close(t)
        }
    }'
}

# Runs finished so far, from the host's own /metrics (an idle run logs
# nothing at INFO).
port=$(( 20000 + RANDOM % 20000 ))
runs_total() {
    curl -sf "http://127.0.0.1:$port/metrics" |
        awk '/^kusto_metrics_runs_total/ {s += $NF} END {printf "%d", s}'
}
now_ns() { date +%s%N; }
# Nanoseconds since the epoch of a log line's leading RFC 3339 timestamp.
line_ns() { date -d "${1%% *}" +%s%N; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
seconds() { awk -v ns="$1" 'BEGIN {printf "%.2f", ns / 1e9}'; }

results=()

# measure N: one deployment, one run; appends a row to results.
measure() {
    local n=$1 dir="$work/n$1" pid start manifests_ns="" first_ns="" outcome="ok"
    deploy "$dir" "$n"
    local log="$dir/host.log"
    echo "== $n MetricsExporters ($dir)" >&2
    start=$(now_ns)
    "$bin" run --config "$dir/kusto-metrics.yaml" >/dev/null 2>"$log" &
    pid=$!
    # Until the first pass is over: watch the log and the RSS.
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            outcome="exited"
            break
        fi
        local rss
        rss=$(status_kib "$pid" VmRSS || echo 0)
        if [ "${rss:-0}" -gt "$rss_limit_kib" ]; then
            outcome="killed: RSS $((rss / 1024)) MiB"
            break
        fi
        if [ -z "$manifests_ns" ]; then
            local line
            line=$(grep -m1 'manifests read' "$log" || true)
            [ -z "$line" ] || manifests_ns=$(( $(line_ns "$line") - start ))
        fi
        local runs
        runs=$(grep -c 'export run' "$log" || true)
        if [ "$runs" -ge "$n" ]; then
            first_ns=$(( $(line_ns "$(grep 'export run' "$log" | sed -n "${n}p")") - start ))
            break
        fi
        if [ $(( $(now_ns) - start )) -gt $(( first_pass_timeout * 1000000000 )) ]; then
            outcome="first pass unfinished after ${first_pass_timeout}s: $runs of $n runs"
            break
        fi
        sleep 0.2
    done
    local failed hwm="" idle="-" second="-"
    failed=$(grep -c 'export run failed' "$log" || true)
    if [ "$outcome" = "ok" ]; then
        local t0 t1 runs0 runs1
        t0=$(cpu_ticks "$pid")
        runs0=$(runs_total || echo 0)
        local deadline=$(( $(now_ns) + idle_seconds * 1000000000 ))
        while [ "$(now_ns)" -lt "$deadline" ]; do
            rss=$(status_kib "$pid" VmRSS || echo 0)
            if [ "${rss:-0}" -gt "$rss_limit_kib" ]; then
                outcome="killed in the idle window: RSS $((rss / 1024)) MiB"
                break
            fi
            sleep 1
        done
        t1=$(cpu_ticks "$pid")
        runs1=$(runs_total || echo 0)
        idle=$(awk -v d=$((t1 - t0)) -v hz="$ticks_per_second" -v s="$idle_seconds" 'BEGIN {printf "%.1f%%", 100 * d / hz / s}')
        second=$((runs1 - runs0))
    fi
    hwm=$(status_kib "$pid" VmHWM 2>/dev/null || echo "")
    kill -INT "$pid" 2>/dev/null || true
    # Runs in progress get the host's shutdown grace; then it is killed.
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local rss_mib="-" rss_per="-" first="-" first_per="-" manifests="-"
    [ -z "$manifests_ns" ] || manifests=$(seconds "$manifests_ns")s
    if [ -n "$hwm" ]; then
        rss_mib=$((hwm / 1024))
        rss_per=$(awk -v k="$hwm" -v n="$n" 'BEGIN {printf "%.0f", k / n}')
    fi
    if [ -n "$first_ns" ]; then
        first=$(seconds "$first_ns")s
        first_per=$(awk -v ns="$first_ns" -v n="$n" 'BEGIN {printf "%.2f", ns / 1e6 / n}')
    fi
    results+=("$(printf '%-9s %-10s %-11s %-13s %-9s %-16s %-11s %-12s %s' \
        "$n" "$manifests" "$first" "$rss_mib" "$idle" "$second" "$rss_per" "$first_per" "$outcome; failed runs: $failed")")
}

# A warm-up run fills the guest cache.
deploy "$work/warmup" 1
"$bin" run --once --config "$work/warmup/kusto-metrics.yaml" >/dev/null 2>"$work/warmup/host.log" \
    || { echo "warm-up run failed:" >&2; cat "$work/warmup/host.log" >&2; exit 1; }

for n in "${counts[@]}"; do
    measure "$n"
done

printf '\n%-9s %-10s %-11s %-13s %-9s %-16s %-11s %-12s %s\n' \
    exporters manifests "first pass" "peak RSS MiB" "idle CPU" "runs in window" "KiB/export" "ms/export" outcome
for r in "${results[@]}"; do echo "$r"; done
echo "(idle CPU: share of one core over ${idle_seconds}s after the first pass; runs in window: runs that finished then; interval $interval; $namespaces namespace(s); $rows rows per table)"
