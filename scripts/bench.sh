#!/usr/bin/env bash
# The write-path benchmark, measured from outside (docs/BENCHMARKS.md explains each measure).
#
#   scripts/bench.sh [--secs 10] [--rounds 3] [--connections 32] [--stores sqlite,postgres]
#                    [--key-growth 10000,1000000 | --key-growth none] [--replay-keys 1000]
#                    [--wrk-threads 2] [--out FILE] [--no-build]
#
# Builds the release `accubooks` binary and three benchmark-only examples (bench_ungated,
# bench_ceiling, bench_telemetry), starts each server as its own process on a database of
# its own (PostgreSQL: databases created and dropped here, on BENCH_PG_URL, default
# postgres://postgres@127.0.0.1:5432/postgres; SQLite: files in a temporary directory),
# drives load with wrk (scripts/bench/wrk.lua) and pgbench (scripts/bench/pgbench/*.sql)
# from separate processes, in interleaved rounds (A B A B A B), and prints a markdown
# table (the median of the per-round ratios, and each round's) with machine notes.
# Every process it starts is stopped, and every database it creates dropped, on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${BENCH_SECS:-10}"
rounds="${BENCH_ROUNDS:-3}"
conns="${BENCH_CONNECTIONS:-32}"
stores="${BENCH_STORES:-sqlite,postgres}"
key_growth="${BENCH_KEY_GROWTH:-10000,1000000}"
replay_keys="${BENCH_REPLAY_KEYS:-1000}"
wrk_threads="${BENCH_WRK_THREADS:-2}"
pg_url="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
out=""
build=1

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --secs) secs="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --connections) conns="$2"; shift 2 ;;
        --stores) stores="$2"; shift 2 ;;
        --key-growth) key_growth="$2"; shift 2 ;;
        --replay-keys) replay_keys="$2"; shift 2 ;;
        --wrk-threads) wrk_threads="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) usage ;;
        *) echo "unknown option: $1" >&2; usage ;;
    esac
done

for n in "$secs" "$rounds" "$conns" "$replay_keys" "$wrk_threads"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive number: $n" >&2; exit 2; }
done
[ "$conns" -ge "$wrk_threads" ] || { echo "--connections must be >= --wrk-threads" >&2; exit 2; }
[ "$key_growth" = none ] || [[ "$key_growth" =~ ^[1-9][0-9]*,[1-9][0-9]*$ ]] \
    || { echo "--key-growth takes SMALL,LARGE or none" >&2; exit 2; }

say() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
die() { say "error: $*"; exit 1; }

# --- tools ----------------------------------------------------------------------------

need() { # need COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 && return
    say "$1 is missing: installing the Debian package $2"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get install -y "$2" >/dev/null 2>&1 \
        || { "${sudo[@]}" apt-get update >/dev/null 2>&1 && "${sudo[@]}" apt-get install -y "$2" >/dev/null; } \
        || die "could not install $2; install it and run again"
}

need wrk wrk
need curl curl
need jq jq
case ",$stores," in
    *,postgres,*) need psql postgresql-client; need pgbench postgresql-client ;;
esac
case ",$stores," in
    *,sqlite,*) [ "$key_growth" = none ] || need sqlite3 sqlite3 ;;
esac

target="${CARGO_TARGET_DIR:-target}/release"
if [ "$build" -eq 1 ]; then
    say "building the release binary and the bench examples"
    cargo build --release --locked -p accubooks --bin accubooks \
        --example bench_ungated --example bench_ceiling --example bench_telemetry >&2
fi
server_bin="$target/accubooks"
ungated_bin="$target/examples/bench_ungated"
ceiling_bin="$target/examples/bench_ceiling"
telemetry_bin="$target/examples/bench_telemetry"
for b in "$server_bin" "$ungated_bin" "$ceiling_bin" "$telemetry_bin"; do
    [ -x "$b" ] || die "$b is missing (run without --no-build)"
done

# --- processes, databases, cleanup ----------------------------------------------------

tmp="$(mktemp -d "${TMPDIR:-/tmp}/accubooks-bench.XXXXXX")"
results="$tmp/results.tsv"
: >"$results"
loads="$tmp/loadavg"
: >"$loads"
pids=()
dbs=()
run_id="$(date -u +%Y%m%d%H%M%S)_$$_${RANDOM}"
operator="acbop_bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
auth_operator="Authorization: Bearer $operator"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for db in "${dbs[@]}"; do
        psql -q -X "$pg_url" -c "drop database if exists $db with (force)" >/dev/null 2>&1 \
            || say "could not drop database $db"
    done
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg_db_url() { # the bench URL with its database replaced by $1
    local base="${pg_url%%\?*}" query=""
    [ "$base" = "$pg_url" ] || query="?${pg_url#*\?}"
    echo "${base%/*}/$1$query"
}

create_pg_db() { # create_pg_db SUFFIX -> sets $db_url
    local name="accubooks_bench_${run_id}_$1"
    psql -q -X "$pg_url" -c "create database $name" >/dev/null || die "could not create $name"
    dbs+=("$name")
    db_url="$(pg_db_url "$name")"
}

new_db() { # new_db STORE NAME -> sets $db_url: a PostgreSQL database, or a SQLite file
    if [ "$1" = postgres ]; then
        create_pg_db "$2"
    else
        db_url="sqlite://$tmp/$2.db"
    fi
}

free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

wait_ready() { # wait_ready URL LOGFILE PID
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null "$1" && return
        kill -0 "$3" 2>/dev/null || { cat "$2" >&2; die "a server exited at start"; }
        sleep 0.1
    done
    cat "$2" >&2
    die "$1 did not answer within 30 s"
}

# start_server NAME DATABASE_URL COMMAND... -> sets $addr and $pid
start_server() {
    local name="$1" url="$2" port
    shift 2
    port="$(free_port)"
    ACCUBOOKS_ADMIN_TOKEN="$operator" "$@" --bind "127.0.0.1:$port" \
        --database-url "$url" --log-format json >/dev/null 2>"$tmp/$name.log" &
    pid=$!
    pids+=("$pid")
    addr="127.0.0.1:$port"
    wait_ready "http://$addr/healthz" "$tmp/$name.log" "$pid"
}

# create_company ADDR -> sets $company and $token
create_company() {
    local reply
    reply="$(curl -sf -X POST "http://$1/admin/companies" -H "$auth_operator" \
        -H 'Content-Type: application/json' -d '{"name":"Bench Co"}')" \
        || die "could not create a company on $1"
    company="$(jq -r .company_id <<<"$reply")"
    token="$(jq -r .api_token <<<"$reply")"
}

rss_kib() { # rss_kib PID FIELD (VmRSS, VmHWM)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# rss_during PID SECONDS: prints the largest VmRSS (KiB) sampled every 0.5 s for SECONDS.
rss_during() {
    local max=0 v
    for _ in $(seq 1 $((2 * $2))); do
        v="$(rss_kib "$1" VmRSS 2>/dev/null || echo 0)"
        [ "${v:-0}" -le "$max" ] || max="$v"
        sleep 0.5
    done
    echo "$max"
}

# seed_replays ADDR TOKEN SET: completes the replay keys r-SET-<i> with wrk.lua's bodies.
seed_replays() {
    local cfg="$tmp/seed-$3.curl" i created
    for ((i = 0; i < replay_keys; i++)); do
        [ "$i" -eq 0 ] || echo next
        printf 'url = "http://%s/api/customers"\nheader = "Authorization: Bearer %s"\nheader = "Content-Type: application/json"\nheader = "Idempotency-Key: r-%s-%d"\ndata = "{\\"name\\":\\"Customer r-%s-%d\\",\\"email\\":\\"r%d@example.com\\"}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
            "$1" "$2" "$3" "$i" "$3" "$i" "$i"
    done >"$cfg"
    created="$(curl -s -Z --parallel-max 8 -K "$cfg" 2>"$tmp/seed.log" | grep -c '^201$' || true)"
    [ "$created" -eq "$replay_keys" ] \
        || die "seeding replay keys: $created of $replay_keys answered 201"
}

# --- measuring ------------------------------------------------------------------------

record() { # record STORE MEASURE ROUND A B
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
}

note_load() {
    cut -d' ' -f1 /proc/loadavg >>"$loads"
}

# wrk_run CONNECTIONS URL TOKEN MODE RUN SET EXPECT -> sets $rps $p50 $p99
# EXPECT: 200, 201 or 200+201 (mixed); any other answer fails the run.
wrk_run() {
    local c="$1" url="$2" tok="$3" mode="$4" run="$5" set="$6" expect="$7" t line
    t=$((c < wrk_threads ? c : wrk_threads))
    line="$(wrk -t"$t" -c"$c" -d"${secs}s" --timeout 30s -s scripts/bench/wrk.lua \
        -H "Authorization: Bearer $tok" "$url" -- "$mode" "$run" "$set" "$replay_keys" \
        | grep '^wrk-result')" || die "wrk failed on $url ($mode)"
    note_load
    local s200 s201 other last sock dur ok
    s200="$(field "$line" s200)"; s201="$(field "$line" s201)"; other="$(field "$line" other)"
    last="$(field "$line" last_other)"; sock="$(field "$line" socket_errors)"
    dur="$(field "$line" secs)"
    case "$expect" in
        200) ok="$s200"; other=$((other + s201)) ;;
        201) ok="$s201"; other=$((other + s200)) ;;
        *) ok=$((s200 + s201)) ;;
    esac
    if [ "$other" -ne 0 ] || [ "$sock" -ne 0 ] || [ "$ok" -eq 0 ]; then
        die "$mode on $url: $ok expected answers, $other others (last status $last), $sock socket errors"
    fi
    rps="$(awk -v n="$ok" -v d="$dur" 'BEGIN { printf "%.1f", n / d }')"
    p50="$(field "$line" p50_us)"
    p99="$(field "$line" p99_us)"
}

field() { # field LINE NAME
    tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'
}

# pgbench_run URL COMPANY SCRIPT [CLIENTS] -> sets $tps and $lat_us (the average latency).
# CLIENTS: default the run's connections.
pgbench_run() {
    local output clients="${4:-$conns}"
    output="$(pgbench -n -M prepared -c "$clients" -j $((clients < 2 ? clients : 2)) -T "$secs" -D company="$2" \
        -f "scripts/bench/pgbench/$3.sql" "$1" 2>&1)" \
        || { echo "$output" >&2; die "pgbench $3 failed"; }
    note_load
    if grep -q '^number of failed transactions: [1-9]' <<<"$output"; then
        echo "$output" >&2
        die "pgbench $3: transactions failed"
    fi
    tps="$(awk '/^tps = / { print $3 }' <<<"$output")"
    [ -n "$tps" ] || { echo "$output" >&2; die "pgbench $3 printed no tps"; }
    lat_us="$(awk '/^latency average = / { printf "%.0f", $4 * 1000 }' <<<"$output")"
    [ -n "$lat_us" ] || { echo "$output" >&2; die "pgbench $3 printed no latency"; }
}

ceiling_addr=""
start_ceiling() { # the bare axum server, with a real createCustomer reply as its body
    local port
    port="$(free_port)"
    "$ceiling_bin" --bind "127.0.0.1:$port" --body "$tmp/reply.json" \
        >/dev/null 2>"$tmp/ceiling.log" &
    pid=$!
    pids+=("$pid")
    ceiling_addr="127.0.0.1:$port"
    for _ in $(seq 1 100); do
        curl -s -o /dev/null -X POST "http://$ceiling_addr/" && return
        sleep 0.1
    done
    die "the ceiling server did not start"
}

bench_store() { # bench_store sqlite|postgres
    local store="$1" gurl uurl gated gated_pid ungated ungated_pid gtok utok gcompany
    say "$store: starting the server and the ungated server"
    new_db "$store" gated; gurl="$db_url"
    new_db "$store" ungated; uurl="$db_url"
    start_server "$store-gated" "$gurl" "$server_bin" serve
    gated="$addr"; gated_pid="$pid"
    start_server "$store-ungated" "$uurl" "$ungated_bin"
    ungated="$addr"; ungated_pid="$pid"
    create_company "$gated"; gtok="$token"; gcompany="$company"
    create_company "$ungated"; utok="$token"

    local code
    code="$(curl -s -o "$tmp/reply.json" -w '%{http_code}' -X POST "http://$gated/api/customers" \
        -H "Authorization: Bearer $gtok" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: probe-$run_id" \
        -d '{"name":"Customer n-00000000000000_00000_00000-0-0","email":"c0@example.com"}')"
    [ "$code" = 201 ] || die "$store: the probe write answered $code"
    [ -n "$ceiling_addr" ] || start_ceiling

    local set="$store$run_id"
    say "$store: completing $replay_keys replay keys"
    seed_replays "$gated" "$gtok" "$set"

    local g="http://$gated/api/customers" u="http://$ungated/api/customers"
    local b="http://$ceiling_addr/bare"
    say "$store: warming up"
    local keep_secs="$secs"
    secs=2
    wrk_run "$conns" "$g" "$gtok" new "w$run_id" "$set" 201
    wrk_run "$conns" "$u" "$utok" plain "w$run_id" "$set" 201
    wrk_run "$conns" "$g" "$gtok" replay "w$run_id" "$set" 200
    wrk_run "$conns" "$b" "-" plain "w$run_id" "$set" 200
    secs="$keep_secs"

    local r
    for ((r = 1; r <= rounds; r++)); do
        say "$store: round $r of $rounds"
        local tag="${r}_$run_id"
        wrk_run 1 "$g" "$gtok" new "g1-$tag" "$set" 201; local g1="$p50"
        wrk_run 1 "$u" "$utok" plain "u1-$tag" "$set" 201
        record "$store" "p50 at 1 connection (µs): new write, gated / ungated" "$r" "$g1" "$p50"

        rss_during "$gated_pid" "$secs" >"$tmp/rss" &
        local sampler=$!
        pids+=("$sampler")
        wrk_run "$conns" "$g" "$gtok" new "gn-$tag" "$set" 201
        local grps="$rps" gp50="$p50" gp99="$p99"
        reap "$sampler"
        record "$store" "RSS of the server under $conns-connection new writes (largest VmRSS, MiB)" "$r" \
            "$(mib "$(cat "$tmp/rss")")" "-"
        wrk_run "$conns" "$u" "$utok" plain "un-$tag" "$set" 201
        record "$store" "throughput at $conns connections (/s): new write, gated / ungated" "$r" "$grps" "$rps"
        record "$store" "p50 at $conns connections (µs): new write, gated / ungated" "$r" "$gp50" "$p50"
        record "$store" "p99 at $conns connections (µs): new write, gated / ungated" "$r" "$gp99" "$p99"

        wrk_run "$conns" "$g" "$gtok" replay "rp-$tag" "$set" 200; local rrps="$rps"
        record "$store" "throughput at $conns connections (/s): replay / new write" "$r" "$rrps" "$grps"
        wrk_run "$conns" "$b" "-" plain "b-$tag" "$set" 200
        record "$store" "throughput at $conns connections (/s): replay / bare axum (stored body)" "$r" "$rrps" "$rps"
        wrk_run "$conns" "$g" "$gtok" mixed "m-$tag" "$set" 200+201
        record "$store" "throughput at $conns connections (/s): mixed 70 % new + 30 % replay / new write" "$r" "$rps" "$grps"

        if [ "$store" = postgres ]; then
            pgbench_run "$gurl" "$gcompany" one-statement
            record "$store" "throughput at $conns connections (/s): new write / pgbench, the three inserts as one statement" "$r" "$grps" "$tps"
            pgbench_run "$gurl" "$gcompany" three-statements
            record "$store" "throughput at $conns connections (/s): new write / pgbench, BEGIN + the three inserts + COMMIT" "$r" "$grps" "$tps"
            pgbench_run "$gurl" "$gcompany" write-path
            record "$store" "throughput at $conns connections (/s): new write / pgbench, the server's current statements" "$r" "$grps" "$tps"
            # The bound of any gate that commits the record and the audit row with the
            # business row: those writes alone, without a claim, against the ungated
            # server's statements.
            pgbench_run "$gurl" "$gcompany" writes-without-claim 1; wlat="$lat_us"
            pgbench_run "$gurl" "$gcompany" ungated 1
            record "$store" "pgbench at 1 connection, latency average (µs): the record and the audit row without a claim / the ungated statements" "$r" "$wlat" "$lat_us"
            pgbench_run "$gurl" "$gcompany" writes-without-claim; wtps="$tps"
            pgbench_run "$gurl" "$gcompany" ungated
            record "$store" "pgbench at $conns connections (/s): the record and the audit row without a claim / the ungated statements" "$r" "$wtps" "$tps"
        fi
    done
    record "$store" "peak RSS during the run (VmHWM, MiB): server / ungated server" "-" \
        "$(mib "$(rss_kib "$gated_pid" VmHWM)")" "$(mib "$(rss_kib "$ungated_pid" VmHWM)")"
    stop_pid "$gated_pid"
    stop_pid "$ungated_pid"
}

stop_pid() { # stops a process started here and forgets it
    kill "$1" 2>/dev/null || true
    reap "$1"
}

reap() { # waits for a process started here to end and forgets it
    local kept=() p
    wait "$1" 2>/dev/null || true
    for p in "${pids[@]}"; do
        [ "$p" = "$1" ] || kept+=("$p")
    done
    pids=("${kept[@]}")
}

# prefill STORE DATABASE_URL TENANT N: N completed key records, straight into the database.
prefill() {
    if [ "$1" = postgres ]; then
        psql -q -X -v ON_ERROR_STOP=1 -v tenant="$3" -v n="$4" \
            -f scripts/bench/prefill-keys.postgres.sql "$2" >/dev/null
    else
        sqlite3 -bail -cmd ".timeout 30000" -cmd ".parameter set :tenant \"'$3'\"" \
            -cmd ".parameter set :n $4" "${2#sqlite://}" <scripts/bench/prefill-keys.sqlite.sql
    fi
}

bench_key_growth() { # bench_key_growth STORE: new writes at SMALL vs LARGE stored key records
    local store="$1" small="${key_growth%%,*}" large="${key_growth##*,}" surl lurl s l stok ltok
    say "$store key growth: $small vs $large stored key records"
    new_db "$store" keys_small; surl="$db_url"
    new_db "$store" keys_large; lurl="$db_url"
    start_server "$store-keys-small" "$surl" "$server_bin" serve; s="$addr"; local spid="$pid"
    create_company "$s"; stok="$token"
    prefill "$store" "$surl" "$company" "$small"
    start_server "$store-keys-large" "$lurl" "$server_bin" serve; l="$addr"; local lpid="$pid"
    create_company "$l"; ltok="$token"
    say "$store key growth: filling $large key records"
    prefill "$store" "$lurl" "$company" "$large"
    local keep_secs="$secs" r
    secs=2
    wrk_run "$conns" "http://$s/api/customers" "$stok" new "kw-$run_id" - 201
    wrk_run "$conns" "http://$l/api/customers" "$ltok" new "kw-$run_id" - 201
    secs="$keep_secs"
    for ((r = 1; r <= rounds; r++)); do
        say "$store key growth: round $r of $rounds"
        wrk_run "$conns" "http://$s/api/customers" "$stok" new "ks-${r}_$run_id" - 201
        local srps="$rps"
        wrk_run "$conns" "http://$l/api/customers" "$ltok" new "kl-${r}_$run_id" - 201
        record "$store" "throughput at $conns connections (/s): new write, $small / $large stored keys" "$r" "$srps" "$rps"
    done
    stop_pid "$spid"
    stop_pid "$lpid"
}

bench_telemetry() {
    local r line
    say "telemetry: $rounds runs of the micro-benchmark"
    for ((r = 1; r <= rounds; r++)); do
        line="$("$telemetry_bin" 2>&1 >/dev/null)" || { echo "$line" >&2; die "bench_telemetry failed"; }
        record - "telemetry per replay (µs): metrics + log event + audit enqueue" "$r" \
            "$(field "$(grep '^telemetry replay ' <<<"$line")" us_per_write)" "-"
        record - "telemetry per replay (CPU µs of all threads): the same" "$r" \
            "$(field "$(grep '^telemetry replay ' <<<"$line")" cpu_us_per_write)" "-"
        record - "telemetry per new write (µs): metrics + log event" "$r" \
            "$(field "$(grep '^telemetry new ' <<<"$line")" us_per_write)" "-"
    done
}

# --- the run --------------------------------------------------------------------------

started="$(date -u '+%Y-%m-%d %H:%M UTC')"
note_load
bench_telemetry
IFS=, read -r -a store_list <<<"$stores"
for store in "${store_list[@]}"; do
    case "$store" in
        sqlite|postgres) bench_store "$store" ;;
        *) die "unknown store $store (sqlite, postgres)" ;;
    esac
done
if [ "$key_growth" != none ]; then
    for store in "${store_list[@]}"; do
        bench_key_growth "$store"
    done
fi
finished="$(date -u '+%H:%M UTC')"

pg_version="-"
if [[ ",$stores," == *,postgres,* ]]; then
    pg_version="$(psql -X -tA "$pg_url" -c 'show server_version')"
    pg_sync="$(psql -X -tA "$pg_url" -c 'show synchronous_commit')"
    pg_version="$pg_version (synchronous_commit=$pg_sync)"
fi

report() {
    echo "## Run of $started – $finished"
    echo
    echo "\`scripts/bench.sh --secs $secs --rounds $rounds --connections $conns --stores $stores --key-growth $key_growth --replay-keys $replay_keys --wrk-threads $wrk_threads\`"
    echo
    echo "- machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), memory $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "- PostgreSQL $pg_version; $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2); $(pgbench --version 2>/dev/null || echo 'pgbench -'); $(rustc --version 2>/dev/null || echo 'rustc -')"
    echo "- load average (1 min) during the run: $(sort -n "$loads" | head -n 1) – $(sort -n "$loads" | tail -n 1) (median $(sort -n "$loads" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'))"
    echo "- wrk: $wrk_threads threads; load from separate processes; A and B alternate inside every round"
    echo
    echo "| store | measure | A (median) | B (median) | A/B (median of rounds) | per round |"
    echo "|---|---|---:|---:|---:|---|"
    awk -F'\t' -f scripts/bench/report.awk "$results"
}

if [ -n "$out" ]; then
    report | tee "$out"
else
    report
fi
