#!/usr/bin/env bash
# Scale: what one change costs sluice in a large cluster, against a small one in the same run.
#
# For each source (the files source, and the Kubernetes source through the in-repo fake API
# server) sluice starts on a generated cluster of SMALL apps and then of LARGE apps (each app:
# an Ingress for h<i>.scale.test with three Prefix paths, its Service, and an EndpointSlice of
# three endpoints on 127.0.0.1-3, 25 apps per YAML file; see benches/src/scale.rs). The
# endpoints are one nginx listening on 127.0.0.1-4 on four ports, answering its address:port.
# Figures, each for both sizes and as the ratio LARGE / SMALL:
#
#   1. CPU per endpoint change: one endpoint of an app's EndpointSlice moves (127.0.0.3 ->
#      127.0.0.4); K changes one after the other, each probed through sluice until a request is
#      answered from the new address; sluice's utime+stime (/proc/PID/stat) over the K changes
#      and 0.5 s after, minus its idle CPU over the same time (measured at rest before), / K.
#   2. CPU per Ingress edit: the same, each edit adding a path to another app's Service.
#   3. Time from a change written (file renamed into place / PATCH sent) to the first request
#      it serves, p50 and p99 over K changes of each kind, with wrk loading app 0 meanwhile.
#      On the files source this includes the wait for the next poll (poll_interval_ms).
#   4. RSS at rest (ready, 2 s after) and peak RSS during the changes (VmHWM, reset through
#      /proc/PID/clear_refs once at rest; the largest sampled VmRSS where that is refused).
#   5. wrk req/s and p99 on app 0 during one endpoint change per second versus none: rounds of
#      two runs of the same length, interleaved; medians over rounds.
#
#   benches/wrk/scale.sh                  # 300 and 10 000 apps, both sources (about 6 min)
#   benches/wrk/scale.sh --quick          # fewer changes, shorter wrk runs (about 2 min)
#
# Options:
#   --quick                  K=5 changes, 1 round of 5 s wrk runs
#   --small N / --large N    the two cluster sizes (default 300 and 10000)
#   --changes K              changes per measured figure (default 20)
#   --rounds R --duration S  wrk rounds and seconds per run (default 3 and 10)
#   --sources "files kubernetes"   which sources, in this order
#   --poll-interval-ms MS    the files source's poll interval (default 100)
#   --apps-per-file N        apps per manifest file (default 25: 400 files at 10 000 apps);
#                            every poll stats every file, so 30 000 files (one per object)
#                            cost more at rest than the changes measured
#   --profile P              the cargo profile sluice and the helper are built with (release)
#   --shipped-lto            keep the release profile's fat LTO (a build of about half an hour
#                            on two cores); by default release is built with
#                            CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16,
#                            which changes absolute figures a little, not the ratios (the
#                            figures in benches/README.md were taken with this default build)
#   --no-build               use the binaries already in target/PROFILE
#   --raw FILE               also write every figure as tab-separated values
#
# SLUICE_BIN=PATH uses that sluice binary (nothing is built for it). Pinning on two or more
# cores: sluice on core 0; nginx, wrk, the API server and the probing helper on core 1. Every
# address is loopback, every port free-checked, every wait bounded; every process started here
# is stopped on exit.
set -euo pipefail
bench_name=scale
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

small=300
large=10000
changes=20
rounds=3
duration=10
sources="files kubernetes"
poll_ms=100
per_file=25
profile=release
shipped_lto=0
build=1
raw_out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) changes=5; rounds=1; duration=5 ;;
    --small) small=$2; shift ;;
    --large) large=$2; shift ;;
    --changes) changes=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --duration) duration=$2; shift ;;
    --sources) sources=$2; shift ;;
    --poll-interval-ms) poll_ms=$2; shift ;;
    --apps-per-file) per_file=$2; shift ;;
    --profile) profile=$2; shift ;;
    --shipped-lto) shipped_lto=1 ;;
    --no-build) build=0 ;;
    --raw) raw_out=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "$bench_name: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=lib.sh
source "$root/benches/wrk/lib.sh"
log() { printf '[scale] %s\n' "$*" >&2; }

# Bounds: the apps changed (1 .. 2K + R*S) and the Services an edit adds (16 apps further, in
# the same namespace) must exist in the small cluster; runs stay short.
min_small=$((2 * changes + rounds * duration + 2))
[ "$min_small" -ge 33 ] || min_small=33
in_range --changes "$changes" 1 100
in_range --rounds "$rounds" 1 10
in_range --duration "$duration" 2 60
in_range --large "$large" 20 50000
in_range --apps-per-file "$per_file" 1 10000
in_range --small "$small" "$min_small" "$large"

# ---------------------------------------------------------------- tools and binaries
install_missing nginx:nginx wrk:wrk curl:curl
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug
if [ "$profile" = release ] && [ "$shipped_lto" -eq 0 ]; then
  export CARGO_PROFILE_RELEASE_LTO="${CARGO_PROFILE_RELEASE_LTO:-off}"
  export CARGO_PROFILE_RELEASE_CODEGEN_UNITS="${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-16}"
fi
if [ "$build" -eq 1 ]; then
  # Two invocations, so sluice is built with exactly its own dependency features.
  if [ -z "${SLUICE_BIN:-}" ]; then
    log "building sluice (--profile $profile, LTO ${CARGO_PROFILE_RELEASE_LTO:-as the profile says})"
    (cd "$root" && OPENSSL_NO_VENDOR=1 cargo build -q --profile "$profile" -p sluice --bin sluice)
  fi
  log "building scale-cluster (--profile $profile)"
  (cd "$root" && OPENSSL_NO_VENDOR=1 cargo build -q --profile "$profile" -p sluice-benches --bin scale-cluster)
fi
bin=${SLUICE_BIN:-$root/target/$profile_dir/sluice}
helper=$root/target/$profile_dir/scale-cluster
[ -x "$bin" ] || { echo "$bench_name: no sluice binary at $bin" >&2; exit 1; }
[ -x "$helper" ] || { echo "$bench_name: no scale-cluster binary at $helper" >&2; exit 1; }

clk=$(getconf CLK_TCK)

# Prefixes that pin a command to core 0 (sluice) or core 1 (everything else) when there are two
# cores or more. Arrays, not a function, so `$!` of a background command is the command itself.
on0=() on1=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  on0=(taskset -c 0) on1=(taskset -c 1)
fi

# ---------------------------------------------------------------- the backends
backend_ports=()
for _ in 1 2 3 4; do alloc_port p; backend_ports+=("$p"); done
ports_csv=$(IFS=,; echo "${backend_ports[*]}")
mkdir -p "$tmp/nginx"
{
  printf 'worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/error.log;\n' "$tmp/nginx" "$tmp/nginx"
  printf 'events { worker_connections 4096; }\nhttp {\n  access_log off;\n  keepalive_requests 1000000;\n'
  nginx_temp_paths "$tmp/nginx"
  printf '  server {\n'
  for p in "${backend_ports[@]}"; do
    for a in 127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.4; do printf '    listen %s:%s;\n' "$a" "$p"; done
  done
  # shellcheck disable=SC2016 # nginx variables
  printf '    location / { return 200 "$server_addr:$server_port\\n"; }\n  }\n}\n'
} >"$tmp/nginx/nginx.conf"
"${on1[@]}" "$nginx_bin" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" &
pids+=($!)

wait_for() { # DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.1 s until it holds
  local what=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do "$@" >/dev/null && return 0; sleep 0.1; done
  echo "$bench_name: timed out after ${secs} s waiting for $what" >&2; exit 1
}
answers() { # URL [HOST]: the body of a 200 answer, failing otherwise
  curl -sf --max-time 5 ${2:+-H "Host: $2"} "$1"
}
wait_for "the backends" 10 answers "http://127.0.0.1:${backend_ports[0]}/"

# ---------------------------------------------------------------- figures
declare -A fig
[ -z "$raw_out" ] || : >"$raw_out"
put() { # KEY VALUE
  fig[$1]=$2
  [ -z "$raw_out" ] || printf '%s\t%s\n' "$1" "$2" >>"$raw_out"
}
kv() { # NAME LINE: the value of NAME=... in a helper's output line
  tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'
}
calc() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {
  if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------- one run
run() { # SOURCE APPS
  local src=$1 n=$2 key="$1.$2"
  local dir="$tmp/$src-$n" http_port admin_port started
  mkdir -p "$dir"
  alloc_port http_port
  alloc_port admin_port
  log "$src, $n apps: generating"
  "${on1[@]}" "$helper" generate --out "$dir/manifests" --apps "$n" --backend-ports "$ports_csv" \
    --apps-per-file "$per_file" >"$dir/generated"
  put "$key.yaml_bytes" "$(kv bytes "$(cat "$dir/generated")")"
  local api_pid="" api_args=()
  {
    printf '[server]\nhttp_listen = ["127.0.0.1:%s"]\nadmin_listen = "127.0.0.1:%s"\n' "$http_port" "$admin_port"
    printf 'worker_threads = 1\n[log]\nlevel = "warn"\n[access_log]\nenabled = false\n'
    printf '[leader_election]\nenabled = false\n'
  } >"$dir/sluice.toml"
  if [ "$src" = files ]; then
    printf '[source]\nkind = "files"\n[source.files]\ndirectory = "manifests"\npoll_interval_ms = %s\n' \
      "$poll_ms" >>"$dir/sluice.toml"
    api_args=(--dir "$dir/manifests" --apps-per-file "$per_file")
  else
    "${on1[@]}" "$helper" apiserver --manifests "$dir/manifests" --kubeconfig "$dir/kubeconfig" \
      --max-secs 1800 >"$dir/apiserver.out" 2>"$dir/apiserver.log" &
    api_pid=$!
    pids+=("$api_pid")
    wait_for "the fake API server to load $n apps" 300 test -s "$dir/kubeconfig"
    api_args=(--api "$(kv addr "$(cat "$dir/apiserver.out")")")
    printf '[source]\nkind = "kubernetes"\n[source.kubernetes]\nkubeconfig = "%s"\n' \
      "$dir/kubeconfig" >>"$dir/sluice.toml"
  fi
  log "$src, $n apps: starting sluice"
  started=$(date +%s.%N)
  "${on0[@]}" "$bin" --config "$dir/sluice.toml" >/dev/null 2>"$dir/sluice.log" &
  local pid=$!
  pids+=("$pid")
  ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$admin_port/readyz")" = 200 ]; }
  wait_for "sluice to be ready on $n apps" 300 ready
  wait_for "app 0 to be served" 60 answers "http://127.0.0.1:$http_port/" h0.scale.test
  put "$key.ready_s" "$(calc "$(date +%s.%N) - $started" 1)"
  sleep 2
  put "$key.rss_rest_mib" "$(calc "$(rss_kb "$pid" VmRSS) / 1024")"
  local t0 t1 idle_secs=3
  t0=$(pids_cpu_ticks "$pid"); sleep "$idle_secs"; t1=$(pids_cpu_ticks "$pid")
  local idle_tps; idle_tps=$(calc "($t1 - $t0) / $idle_secs" 3)
  put "$key.idle_core_pct" "$(calc "$idle_tps * 100 / $clk")"
  local hwm_reset=1
  echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || hwm_reset=0

  local common=(--apps "$n" --backend-ports "$ports_csv" --proxy "127.0.0.1:$http_port" --pid "$pid" "${api_args[@]}")
  local out rss_max=0 kind
  for kind in endpoint ingress; do
    log "$src, $n apps: CPU of $changes ${kind} changes"
    out=$("${on1[@]}" "$helper" changes --kind "$kind" --first 1 --count "$changes" "${common[@]}")
    put "$key.cpu_$kind.ms" "$(calc "($(kv cpu_ticks "$out") - $idle_tps * $(kv elapsed_ms "$out") / 1000) * 1000 / $clk / $changes")"
    rss_max=$(( $(kv rss_max_kb "$out") > rss_max ? $(kv rss_max_kb "$out") : rss_max ))
  done
  for kind in endpoint ingress; do
    log "$src, $n apps: time to traffic of $changes ${kind} changes under load"
    "${on1[@]}" timeout 600 wrk -t1 -c32 -d300s -H 'Host: h0.scale.test' "http://127.0.0.1:$http_port/" >/dev/null 2>&1 &
    local wrk_pid=$!
    pids+=("$wrk_pid")
    sleep 1
    out=$("${on1[@]}" "$helper" changes --kind "$kind" --first $((changes + 1)) --count "$changes" \
      --probe-interval-ms 1 --settle-ms 0 "${common[@]}")
    kill "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
    put "$key.lat_$kind.p50_ms" "$(kv p50_ms "$out")"
    put "$key.lat_$kind.p99_ms" "$(kv p99_ms "$out")"
    rss_max=$(( $(kv rss_max_kb "$out") > rss_max ? $(kv rss_max_kb "$out") : rss_max ))
  done

  log "$src, $n apps: wrk, $rounds x (${duration} s without changes, ${duration} s with one per second)"
  local r first=$((2 * changes + 1)) rps_none="" rps_churn="" p99_none="" p99_churn="" wout
  wrk_run() { # -> "req/s p99_us"
    wout=$("${on1[@]}" timeout $((duration + 20)) wrk -t1 -c32 -d"${duration}s" --latency \
      -H 'Host: h0.scale.test' "http://127.0.0.1:$http_port/" 2>&1) ||
      { echo "$bench_name: wrk failed: $wout" >&2; exit 1; }
    echo "$(awk '/^Requests\/sec:/ {print $2}' <<<"$wout") $(to_us "$(awk '$1 == "99%" {print $2}' <<<"$wout")")"
  }
  for ((r = 0; r < rounds; r++)); do
    read -r a b <<<"$(wrk_run)"; rps_none+=" $a"; p99_none+=" $b"
    "${on1[@]}" "$helper" changes --kind endpoint --first "$first" --count "$duration" --interval-ms 1000 \
      --settle-ms 0 "${common[@]}" >"$dir/churn.out" &
    local churn_pid=$!
    pids+=("$churn_pid")
    read -r a b <<<"$(wrk_run)"; rps_churn+=" $a"; p99_churn+=" $b"
    wait "$churn_pid" || { echo "$bench_name: the changes during wrk failed" >&2; exit 1; }
    rss_max=$(( $(kv rss_max_kb "$(cat "$dir/churn.out")") > rss_max ? $(kv rss_max_kb "$(cat "$dir/churn.out")") : rss_max ))
    first=$((first + duration))
  done
  put "$key.rps_none" "$(median <<<"$rps_none")"
  put "$key.rps_churn" "$(median <<<"$rps_churn")"
  put "$key.p99_none_ms" "$(calc "$(median <<<"$p99_none") / 1000" 2)"
  put "$key.p99_churn_ms" "$(calc "$(median <<<"$p99_churn") / 1000" 2)"
  if [ "$hwm_reset" -eq 1 ]; then
    put "$key.rss_peak_mib" "$(calc "$(rss_kb "$pid" VmHWM) / 1024")"
  else
    put "$key.rss_peak_mib" "$(calc "$rss_max / 1024")"
  fi
  put "$key.rss_end_mib" "$(calc "$(rss_kb "$pid" VmRSS) / 1024")"

  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -n "$api_pid" ]; then kill -TERM "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
  rm -rf "$dir/manifests"
}

# ---------------------------------------------------------------- report
report() { # SOURCE
  local src=$1 s="$1.$small" l="$1.$large" row
  printf '\n%s source: %s apps vs %s apps (sluice %s)\n\n' "$src" "$small" "$large" "${bin#"$root"/}"
  printf '| figure | %s | %s | ratio |\n|---|---:|---:|---:|\n' "$small" "$large"
  for row in \
    "cpu_endpoint.ms|CPU per endpoint change, ms" \
    "cpu_ingress.ms|CPU per Ingress edit, ms" \
    "lat_endpoint.p50_ms|endpoint change to traffic under load, p50 ms" \
    "lat_endpoint.p99_ms|endpoint change to traffic under load, p99 ms" \
    "lat_ingress.p50_ms|Ingress edit to traffic under load, p50 ms" \
    "lat_ingress.p99_ms|Ingress edit to traffic under load, p99 ms" \
    "rss_rest_mib|RSS at rest, MiB" \
    "rss_peak_mib|peak RSS during the changes, MiB" \
    "rss_end_mib|RSS after the changes, MiB" \
    "rps_none|req/s, no changes" \
    "rps_churn|req/s, one change per second" \
    "p99_none_ms|p99 ms, no changes" \
    "p99_churn_ms|p99 ms, one change per second" \
    "idle_core_pct|CPU at rest, % of a core" \
    "ready_s|start to ready, s" \
    "yaml_bytes|manifests, bytes"; do
    local k=${row%%|*} name=${row#*|} a b
    a=${fig[$s.$k]:-nan}; b=${fig[$l.$k]:-nan}
    printf '| %s | %s | %s | %s |\n' "$name" "$a" "$b" "$(awk -v a="$a" -v b="$b" \
      'BEGIN { if (a + 0 != 0) printf "%.2f", b / a; else print "-" }')"
  done
  local k
  for k in "$s" "$l"; do
    printf '\n%s: one change per second / none: req/s %s, p99 %s' "$k" \
      "$(awk -v a="${fig[$k.rps_churn]:-0}" -v b="${fig[$k.rps_none]:-0}" 'BEGIN { if (b) printf "%.2f", a / b }')" \
      "$(awk -v a="${fig[$k.p99_churn_ms]:-0}" -v b="${fig[$k.p99_none_ms]:-0}" 'BEGIN { if (b) printf "%.2f", a / b }')"
  done
  printf '\n'
}

start_all=$(date +%s)
for src in $sources; do
  case "$src" in files|kubernetes) ;; *) echo "$bench_name: unknown source $src" >&2; exit 2 ;; esac
  run "$src" "$small"
  run "$src" "$large"
done
for src in $sources; do report "$src"; done
printf '\n%s: %d s in all; %d changes per figure, %d x %d s wrk rounds, files poll %d ms, %d apps per file\n' \
  "$bench_name" "$(( $(date +%s) - start_all ))" "$changes" "$rounds" "$duration" "$poll_ms" "$per_file"
