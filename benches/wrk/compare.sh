#!/usr/bin/env bash
# wrk comparison of sluice with a bare Pingora proxy, an nginx reverse proxy and the upstream
# itself, all on loopback, on the same upstream (nginx answering "hello\n" on two ports).
#
#   benches/wrk/compare.sh                 # 3 interleaved rounds x 5 s at 32 and 128 connections
#   benches/wrk/compare.sh --quick         # smoke run: 1 round x 2 s at 32 connections
#
# Options:
#   --quick                    1 round, 2 s runs, 1 s warm-up, 32 connections only
#   --rounds N                 interleaved rounds (default 3)
#   --duration S               seconds per measured run (default 5)
#   --conns "C1 C2"            wrk connection counts (default "32 128")
#   --targets "direct nginx nginx-lua bare sluice"   which targets, in this order in every round
#                              (nginx-lua: nginx with a Lua balancer and log phase, the
#                              per-request machinery ingress-nginx adds)
#   --extra-sluice NAME=PATH   also measure another sluice binary (e.g. a different allocator)
#   --extra-sluice-alog NAME=PATH   the same, with its JSON access log on
#   --extra-bare NAME=ARGS     also measure bare-pingora with extra arguments (e.g. --timeouts)
#   --extra-bare-bin NAME=PATH also measure another bare-pingora binary (e.g. another profile)
#   --sluice-annotated NAME=MAP  also measure sluice with the bench Ingress annotated by MAP, a
#                              YAML flow mapping: NAME='{sluice.dev/limit-rps: "1000000"}'
#   --sluice-limits            the same, as target sluice-limits, with an allow list that admits
#                              loopback and a rate limit no run reaches (sluice.dev/
#                              allowlist-source-range, limit-rps): what the access checks and the
#                              limit cost a request, beside the plain sluice route
#   --sluice-access-log        also measure sluice with its default JSON access log on (target
#                              sluice-alog, lines to a file); "sluice" itself runs with the access
#                              log off, as the nginx proxy here does (access_log off)
#   --no-build                 use the binaries already built (target/release)
#   --nice N                   run every process started here at niceness N (root may use e.g.
#                              -15 so compiles by others on a shared machine disturb less)
#   --raw FILE                 also write every run as tab-separated values to FILE
#   --body-bytes N             wrk asks for a response body of N bytes (the upstream serves a
#                              file at /body) instead of the 6-byte "hello\n" (0..1048576)
#   --browser-headers          requests carry a browser's headers (User-Agent, Accept, cookies,
#                              ...: 11 in all, names in mixed case) instead of wrk's Host alone
#   --callgrind                instead of timed rounds, count the user-space instructions each
#                              Pingora-based target (bare, its variants, sluice) executes per
#                              request, under valgrind's callgrind, over a fixed wrk load: a
#                              figure the machine's noise does not move (nginx and direct are
#                              not measured; kernel time is not counted); --callgrind-keep DIR
#                              keeps each target's dump there, for callgrind_annotate
#   --perf NAME                after the rounds, profile target NAME under one more wrk run
#                              (perf record -e cpu-clock, DWARF call graphs) and print its top
#                              symbols, self and inclusive; --perf-data FILE keeps perf.data
#
# Pinning (2-core machine): the proxy under test on core 0, wrk and the upstream nginx on core 1.
# CPU per request is the proxy's utime+stime (all its processes, from /proc/PID/stat) over the
# run, divided by the requests wrk completed. Every process started here is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

orig_args=("$@")
rounds=3
duration=5
warmup=2
conns_list="32 128"
targets="direct nginx nginx-lua bare sluice"
build=1
raw_out=""
extra_sluice=()
annotated=()
extra_bare=()
extra_bare_bin=()
with_alog=0
perf_target=""
nice_n=0
perf_data=""
callgrind=0
callgrind_keep=""
body_bytes=0
# What every request carries; --browser-headers adds a browser's usual headers.
wrk_headers=(-H 'Host: bench.local')
browser_headers=(
  -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0'
  -H 'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'
  -H 'Accept-Language: en-US,en;q=0.5'
  -H 'Accept-Encoding: gzip, deflate, br, zstd'
  -H 'Cookie: session=4f2a9c1e7b3d; theme=dark'
  -H 'Upgrade-Insecure-Requests: 1'
  -H 'Sec-Fetch-Dest: document'
  -H 'Sec-Fetch-Mode: navigate'
  -H 'Sec-Fetch-Site: none'
  -H 'Priority: u=0, i'
)
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=1; duration=2; warmup=1; conns_list="32" ;;
    --rounds) rounds="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --conns) conns_list="$2"; shift ;;
    --targets) targets="$2"; shift ;;
    --extra-sluice) extra_sluice+=("$2=off"); shift ;;
    --extra-sluice-alog) extra_sluice+=("$2=on"); shift ;;
    --extra-bare) extra_bare+=("$2"); shift ;;
    --extra-bare-bin) extra_bare_bin+=("$2"); shift ;;
    --sluice-access-log) with_alog=1 ;;
    --sluice-annotated) annotated+=("$2"); shift ;;
    --sluice-limits) annotated+=('sluice-limits={sluice.dev/allowlist-source-range: "10.0.0.0/8, 127.0.0.0/8, ::1", sluice.dev/limit-rps: "1000000"}') ;;
    --no-build) build=0 ;;
    --raw) raw_out="$2"; shift ;;
    --browser-headers) wrk_headers+=("${browser_headers[@]}") ;;
    --body-bytes) body_bytes="$2"; shift ;;
    --nice) nice_n="$2"; shift ;;
    --perf) perf_target="$2"; shift ;;
    --perf-data) perf_data="$2"; shift ;;
    --callgrind) callgrind=1 ;;
    --callgrind-keep) callgrind_keep="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
# Bounds: every run is short and the whole script stays within a few minutes.
[ "$rounds" -ge 1 ] && [ "$rounds" -le 10 ] || { echo "--rounds must be 1..10" >&2; exit 2; }
[ "$duration" -ge 1 ] && [ "$duration" -le 30 ] || { echo "--duration must be 1..30" >&2; exit 2; }
[[ "$body_bytes" =~ ^[0-9]+$ ]] && [ "$body_bytes" -le 1048576 ] || { echo "--body-bytes must be 0..1048576" >&2; exit 2; }

log() { printf '[compare] %s\n' "$*" >&2; }

# With the kernel's autogroup scheduling, niceness only weighs against processes of the same
# session: run in a session of our own and give that session's group the niceness too.
if [ "$nice_n" != 0 ] && [ -z "${COMPARE_OWN_SESSION:-}" ] && [ -e /proc/self/autogroup ] \
  && command -v setsid >/dev/null 2>&1; then
  COMPARE_OWN_SESSION=1 exec setsid --wait "$0" "${orig_args[@]}"
fi
if [ -n "${COMPARE_OWN_SESSION:-}" ]; then
  echo "$nice_n" >/proc/self/autogroup 2>/dev/null || log "could not set the autogroup's niceness"
fi

# ---------------------------------------------------------------- tools
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
[ -z "$perf_target" ] || command -v perf >/dev/null 2>&1 || need+=(linux-perf)
[ "$callgrind" -eq 0 ] || command -v callgrind_control >/dev/null 2>&1 || need+=(valgrind)
# The Lua-balanced nginx: Debian's Lua module (with the NDK it loads) and lua-resty-core, which
# holds ngx.balancer.
NGINX_MODULES=/usr/lib/nginx/modules
if grep -qw nginx-lua <<<"$targets" && [ "$callgrind" -eq 0 ]; then
  [ -e "$NGINX_MODULES/ngx_http_lua_module.so" ] || need+=(libnginx-mod-http-lua)
  dpkg -s lua-resty-core >/dev/null 2>&1 || need+=(lua-resty-core)
fi
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

cores=$(nproc)
if [ "$cores" -ge 2 ]; then
  proxy_cpu=0; load_cpu=1
else
  log "only one core: no pinning separation possible"
  proxy_cpu=0; load_cpu=0
fi
clk_tck=$(getconf CLK_TCK)
# pin CPU CMD...: exec CMD on one core at the chosen niceness. Only ever called in a subshell
# (with & or in $(...)), so $! is the pid of CMD itself.
pin() { local cpu="$1"; shift; exec taskset -c "$cpu" nice -n "$nice_n" "$@"; }
# What Pingora-based targets run under: nothing, or callgrind with counting off until the load.
wrap=()

# ---------------------------------------------------------------- build
cd "$repo"
export OPENSSL_NO_VENDOR=1
if [ "$build" -eq 1 ]; then
  log "building sluice and bare-pingora (release)"
  cargo build --release -q -p sluice
  cargo build --release -q -p sluice-benches --bin bare-pingora
fi
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
SLUICE_BIN="${SLUICE_BIN:-$target_dir/release/sluice}"
BARE_BIN="${BARE_BIN:-$target_dir/release/bare-pingora}"
for b in "$SLUICE_BIN" "$BARE_BIN"; do
  [ -x "$b" ] || { echo "compare.sh: $b is missing (run without --no-build)" >&2; exit 1; }
done

# Compile load on the other core skews everything: wait (bounded) for other builds to finish.
# Instruction counts (--callgrind) do not depend on the load: no wait then.
for _ in $(seq 1 $((callgrind ? 0 : 36))); do
  if pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; then
    log "a cargo/rustc is running; waiting (up to 3 min in all)"
    sleep 5
  else
    break
  fi
done
if pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; then
  log "WARNING: cargo/rustc still running: figures will be noisy"
fi

# ---------------------------------------------------------------- scratch, cleanup, ports
bench_name=compare.sh
next_port="${BENCH_PORT_BASE:-18100}"
# shellcheck source=benches/wrk/lib.sh
. "$(dirname "$0")/lib.sh"
alloc_port up1; alloc_port up2

# ---------------------------------------------------------------- upstream
hello_upstream_conf "$tmp/up" "$up1" "$up2"
# What wrk asks for: "/" answers "hello\n"; with --body-bytes, "/body" answers a file that size.
wrk_path=/
if [ "$body_bytes" -gt 0 ]; then
  head -c "$body_bytes" /dev/zero | tr '\0' x >"$tmp/up/body.txt"
  sed -i "s#^    location / {#    location = /body { default_type text/plain; alias $tmp/up/body.txt; }\n    location / {#" \
    "$tmp/up/nginx.conf"
  wrk_path=/body
fi
pin "$load_cpu" "$NGINX" -e "$tmp/up/error.log" -c "$tmp/up/nginx.conf" &
pids+=($!)

# ---------------------------------------------------------------- targets
declare -A port pidof_target
tlist=()
# nginx_proxy_conf NAME PORT [lua]: writes $tmp/NAME/nginx.conf, nginx proxying to the upstream.
# With "lua", what ingress-nginx adds to every request, as a lower bound of its cost: the peer is
# chosen by a Lua balancer (round robin in a Lua table, ngx.balancer.set_current_peer, as
# ingress-nginx's balancer.lua does) and a Lua log phase gathers the request's figures into a
# per-worker batch (ingress-nginx's monitor.lua batches them for its metrics socket; here the
# batch is dropped when full instead of sent).
nginx_proxy_conf() {
  local name="$1" p="$2" lua="${3:-}" d="$tmp/$1" modules="" servers balancer="" logphase=""
  mkdir -p "$d"
  servers=$(printf '    server 127.0.0.1:%s;\n    server 127.0.0.1:%s;' "$up1" "$up2")
  if [ "$lua" = lua ]; then
    modules=$(printf 'load_module %s;\nload_module %s;' "$NGINX_MODULES/ndk_http_module.so" \
      "$NGINX_MODULES/ngx_http_lua_module.so")
    # The address is a placeholder nginx needs; the balancer below sets every peer.
    servers="    server 0.0.0.1;"
    balancer=$(cat <<EOF
    balancer_by_lua_block {
      local balancer = require "ngx.balancer"
      local peers = { { "127.0.0.1", $up1 }, { "127.0.0.1", $up2 } }
      local n = (package.loaded.rr_next or 0) % #peers + 1
      package.loaded.rr_next = n
      local ok, err = balancer.set_current_peer(peers[n][1], peers[n][2])
      if not ok then ngx.log(ngx.ERR, "set_current_peer: ", err) return ngx.exit(502) end
    }
EOF
)
    logphase=$(cat <<'EOF'
      log_by_lua_block {
        local batch = package.loaded.metrics_batch
        if not batch or #batch >= 1000 then batch = {} package.loaded.metrics_batch = batch end
        batch[#batch + 1] = {
          host = ngx.var.host, status = ngx.var.status, method = ngx.var.request_method,
          path = ngx.var.uri, request_length = ngx.var.request_length,
          request_time = tonumber(ngx.var.request_time),
          upstream_addr = ngx.var.upstream_addr,
          upstream_response_time = tonumber(ngx.var.upstream_response_time),
          upstream_status = ngx.var.upstream_status, bytes_sent = ngx.var.bytes_sent,
        }
      }
EOF
)
  fi
  cat >"$d/nginx.conf" <<EOF
$modules
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
$(nginx_temp_paths "$d")
  upstream backend {
$servers
$balancer
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$p;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # What sluice does too: keep the client's Host, add the forwarding headers.
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
      proxy_set_header X-Forwarded-Port \$server_port;
$logphase
    }
  }
}
EOF
}
start_nginx_proxy() { # name [lua]
  local name="$1" p; alloc_port p
  nginx_proxy_conf "$name" "$p" "${2:-}"
  pin "$proxy_cpu" "$NGINX" -e "$tmp/$name/error.log" -c "$tmp/$name/nginx.conf" &
  pids+=($!)
  port[$name]=$p; pidof_target[$name]=$!
}
start_bare() { # name, binary, extra args...
  local name="$1" bin="$2"; shift 2
  local p; alloc_port p
  # shellcheck disable=SC2068
  pin "$proxy_cpu" ${wrap[@]+"${wrap[@]}"} "$bin" --listen "127.0.0.1:$p" --threads 1 $@ \
    "127.0.0.1:$up1" "127.0.0.1:$up2" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  port[$name]=$p; pidof_target[$name]=$!
}
start_sluice() { # name, binary, access log (on|off), annotations of the bench Ingress
  local name="$1" bin="$2" alog="${3:-off}" annotations="${4:-{\}}"
  local p a; alloc_port p; alloc_port a
  local d="$tmp/$name"
  mkdir -p "$d/manifests"
  cat >"$d/sluice.toml" <<EOF
[server]
http_listen = ["127.0.0.1:$p"]
admin_listen = "127.0.0.1:$a"
worker_threads = 1
shutdown_grace_period_secs = 1
drain_secs = 0

[log]
level = "warn"

[source]
kind = "files"

[source.files]
directory = "manifests"
EOF
  # The access log (on by default in sluice) is off like nginx's here, unless asked for.
  if [ "$alog" = on ]; then
    printf '\n[access_log]\nenabled = true\nformat = "json"\n' >>"$d/sluice.toml"
  else
    printf '\n[access_log]\nenabled = false\n' >>"$d/sluice.toml"
  fi
  cat >"$d/manifests/bench.yaml" <<EOF
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: sluice
spec:
  controller: sluice.dev/ingress-controller
---
apiVersion: v1
kind: Service
metadata:
  name: bench
  namespace: default
spec:
  ports:
    - name: http
      port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-1
  namespace: default
  labels:
    kubernetes.io/service-name: bench
addressType: IPv4
ports:
  - name: http
    port: $up1
endpoints:
  - addresses: ["127.0.0.1"]
    conditions:
      ready: true
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-2
  namespace: default
  labels:
    kubernetes.io/service-name: bench
addressType: IPv4
ports:
  - name: http
    port: $up2
endpoints:
  - addresses: ["127.0.0.1"]
    conditions:
      ready: true
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: default
  annotations: $annotations
spec:
  ingressClassName: sluice
  rules:
    - host: bench.local
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: bench
                port:
                  name: http
EOF
  # A sluice older than the access log refuses the key: leave it out then.
  if ! "$bin" check --config "$d/sluice.toml" >"$d/check.log" 2>&1; then
    if grep -q 'access_log' "$d/check.log"; then
      sed -i '/^\[access_log\]/,$d' "$d/sluice.toml"
    fi
    "$bin" check --config "$d/sluice.toml" >"$d/check.log" 2>&1 || {
      echo "compare.sh: $name refuses its settings:" >&2; cat "$d/check.log" >&2; exit 1; }
  fi
  # An annotated route shows its filters in brackets; a refused annotation would fail closed.
  if [ "$annotations" != "{}" ]; then
    grep -q '\[' "$d/check.log" && ! grep -qi 'invalid' "$d/check.log" || {
      echo "compare.sh: $name's annotations made no filter:" >&2; cat "$d/check.log" >&2; exit 1; }
    log "$name: $(grep -o '\[.*\]' "$d/check.log" | head -1)"
  fi
  pin "$proxy_cpu" ${wrap[@]+"${wrap[@]}"} "$bin" --config "$d/sluice.toml" >"$d/log" 2>&1 &
  pids+=($!)
  port[$name]=$p; pidof_target[$name]=$!
  # Ready once the first snapshot is live.
  for _ in $(seq 1 $((callgrind ? 600 : 100))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$a/readyz" || true)" = 200 ] && return 0
    sleep 0.1
  done
  echo "compare.sh: $name did not become ready; its log:" >&2
  cat "$d/log" >&2
  exit 1
}

if [ "$callgrind" -eq 1 ]; then
  wrap=(valgrind -q --tool=callgrind --instr-atstart=no "--callgrind-out-file=$tmp/callgrind.%p")
  # Under valgrind a start takes seconds: wait longer for readiness below.
  targets=$(tr ' ' '\n' <<<"$targets" | grep -v -x -e direct -e nginx -e nginx-lua | tr '\n' ' ')
fi
for t in $targets; do
  case "$t" in
    direct) port[direct]=$up1; pidof_target[direct]=""; tlist+=(direct) ;;
    nginx) start_nginx_proxy nginx; tlist+=(nginx) ;;
    nginx-lua) start_nginx_proxy nginx-lua lua; tlist+=(nginx-lua) ;;
    bare) start_bare bare "$BARE_BIN"; tlist+=(bare) ;;
    sluice) start_sluice sluice "$SLUICE_BIN"; tlist+=(sluice) ;;
    *) echo "compare.sh: unknown target $t" >&2; exit 2 ;;
  esac
done
for e in ${extra_bare[@]+"${extra_bare[@]}"}; do
  start_bare "${e%%=*}" "$BARE_BIN" "${e#*=}"; tlist+=("${e%%=*}")
done
for e in ${extra_bare_bin[@]+"${extra_bare_bin[@]}"}; do
  start_bare "${e%%=*}" "${e#*=}"; tlist+=("${e%%=*}")
done
[ "$with_alog" -eq 0 ] || { start_sluice sluice-alog "$SLUICE_BIN" on; tlist+=(sluice-alog); }
for e in ${annotated[@]+"${annotated[@]}"}; do
  start_sluice "${e%%=*}" "$SLUICE_BIN" off "${e#*=}"; tlist+=("${e%%=*}")
done
for e in ${extra_sluice[@]+"${extra_sluice[@]}"}; do
  # NAME=PATH=on|off
  en="${e%%=*}"; ep="${e#*=}"; ea="${ep##*=}"; ep="${ep%=*}"
  start_sluice "$en" "$ep" "$ea"; tlist+=("$en")
done

# Every target must answer 200 with the upstream's body before anything is measured.
for t in "${tlist[@]}"; do
  ok=0
  for _ in $(seq 1 $((callgrind ? 600 : 50))); do
    body=$(curl -s --max-time 1 -H 'Host: bench.local' -w ' %{http_code}' "http://127.0.0.1:${port[$t]}/" || true)
    if [ "$body" = "hello
 200" ]; then ok=1; break; fi
    sleep 0.1
  done
  [ "$ok" -eq 1 ] || { echo "compare.sh: $t (port ${port[$t]}) does not answer 200 hello: '$body'" >&2; exit 1; }
  if [ "$body_bytes" -gt 0 ]; then
    got=$(curl -s -o /dev/null --max-time 5 -H 'Host: bench.local' -w '%{http_code} %{size_download}' \
      "http://127.0.0.1:${port[$t]}$wrk_path" || true)
    [ "$got" = "200 $body_bytes" ] || {
      echo "compare.sh: $t does not serve the $body_bytes-byte body: '$got'" >&2; exit 1; }
  fi
  log "$t answers 200 on 127.0.0.1:${port[$t]}"
done

# ---------------------------------------------------------------- measuring
# The pids whose CPU time counts for a target: the process and its children (nginx workers).
target_pids() {
  local p="${pidof_target[$1]}"
  [ -n "$p" ] || return 0
  echo "$p"
  pgrep -P "$p" || true
}
cpu_ticks() { pids_cpu_ticks $(target_pids "$1"); }
results="$tmp/results.tsv"
: >"$results"
run_wrk() { # target conns seconds round -> appends a row unless round is "warmup"
  local t="$1" c="$2" d="$3" r="$4" out before after
  before=$(cpu_ticks "$t")
  out=$(pin "$load_cpu" timeout $((d + 10)) wrk -t1 -c"$c" -d"${d}s" --latency \
    "${wrk_headers[@]}" "http://127.0.0.1:${port[$t]}$wrk_path" 2>&1) || {
    echo "compare.sh: wrk failed on $t: $out" >&2; exit 1; }
  after=$(cpu_ticks "$t")
  [ "$r" = warmup ] && return 0
  local rps reqs p50 p99 errs cpu_us util
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  if [ -n "${pidof_target[$t]}" ]; then
    cpu_us=$(awk -v a="$before" -v b="$after" -v n="$reqs" -v hz="$clk_tck" \
      'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
    util=$(awk -v a="$before" -v b="$after" -v hz="$clk_tck" -v d="$d" \
      'BEGIN { printf "%.0f", (b - a) / hz / d * 100 }')
  else
    cpu_us="-"; util="-"
  fi
  [ -z "$errs" ] || log "WARNING $t c=$c round $r: $errs"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$c" "$r" "$rps" "$p50" "$p99" "$cpu_us" "$util" >>"$results"
  log "$(printf 'c=%-4s round %s %-14s %10.0f req/s  p50 %7.0fus  p99 %7.0fus  cpu %6s us/req  proxy core %s%%' \
    "$c" "$r" "$t" "$rps" "$p50" "$p99" "$cpu_us" "$util")"
}

# ---------------------------------------------------------------- instructions (--callgrind)
if [ "$callgrind" -eq 1 ]; then
  c1=$(awk '{print $1}' <<<"$conns_list")
  declare -A instr reqs_of
  for t in "${tlist[@]}"; do
    pid="${pidof_target[$t]}"
    (pin "$load_cpu" timeout $((warmup + 30)) wrk -t1 -c"$c1" -d"${warmup}s" \
      "${wrk_headers[@]}" "http://127.0.0.1:${port[$t]}$wrk_path") >/dev/null 2>&1 || true
    callgrind_control -i on "$pid" >/dev/null
    out=$(pin "$load_cpu" timeout $((duration + 30)) wrk -t1 -c"$c1" -d"${duration}s" \
      "${wrk_headers[@]}" "http://127.0.0.1:${port[$t]}$wrk_path" 2>&1) || {
      echo "compare.sh: wrk failed on $t: $out" >&2; exit 1; }
    # Dump first: switching instrumentation off first leaves an empty dump.
    callgrind_control -d "$pid" >/dev/null
    callgrind_control -i off "$pid" >/dev/null
    n_req=$(awk '/requests in/ {print $1}' <<<"$out")
    dump=$(ls -t "$tmp/callgrind.$pid".* 2>/dev/null | head -n 1)
    n_ins=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump" 2>/dev/null)
    [ -n "$n_ins" ] && [ "${n_req:-0}" -gt 0 ] || {
      echo "compare.sh: no callgrind count for $t" >&2; exit 1; }
    instr[$t]=$(awk -v n="$n_ins" -v r="$n_req" 'BEGIN { printf "%.0f", n / r }')
    reqs_of[$t]=$n_req
    [ -z "$callgrind_keep" ] || cp "$dump" "$callgrind_keep/$t.callgrind"
    log "$(printf '%-14s %8s requests  %8s instructions/request' "$t" "$n_req" "${instr[$t]}")"
  done
  echo
  echo "user-space instructions per request under callgrind (wrk -t1 -c$c1, ${duration}s each)"
  printf '%-16s %10s %14s %10s\n' target requests "instr/req" "vs bare"
  for t in "${tlist[@]}"; do
    printf '%-16s %10s %14s %10s\n' "$t" "${reqs_of[$t]}" "${instr[$t]}" \
      "$(awk -v a="${instr[$t]}" -v b="${instr[bare]:-}" 'BEGIN { if (b == "") print "-"; else printf "%.2f", a / b }')"
  done
  exit 0
fi

total=$(( ${#tlist[@]} * $(wc -w <<<"$conns_list") * (rounds * duration + warmup) ))
log "measuring ${tlist[*]}; about ${total}s of wrk"
for c in $conns_list; do
  for t in "${tlist[@]}"; do run_wrk "$t" "$c" "$warmup" warmup; done
  for r in $(seq 1 "$rounds"); do
    for t in "${tlist[@]}"; do run_wrk "$t" "$c" "$duration" "$r"; done
  done
done
[ -z "$raw_out" ] || cp "$results" "$raw_out"

# ---------------------------------------------------------------- table
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
  if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v t="$1" -v c="$2" -v k="$3" '$1 == t && $2 == c && $k != "-" { print $k }' "$results" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

echo
echo "wrk -t1, ${duration}s runs, median of $rounds interleaved round(s); proxy on core $proxy_cpu, wrk + upstream on core $load_cpu; response body $([ "$body_bytes" -gt 0 ] && echo "$body_bytes bytes" || echo 6 bytes)"
for c in $conns_list; do
  echo
  printf '%-14s %6s %12s %10s %10s %14s %10s\n' target conns "req/s" "p50 us" "p99 us" "cpu us/req" "core %"
  declare -A rps p99 cpu
  for t in "${tlist[@]}"; do
    rps[$t]=$(col "$t" "$c" 4); p99[$t]=$(col "$t" "$c" 6); cpu[$t]=$(col "$t" "$c" 7)
    printf '%-14s %6s %12.0f %10.0f %10.0f %14s %10s\n' "$t" "$c" "${rps[$t]}" "$(col "$t" "$c" 5)" \
      "${p99[$t]}" "${cpu[$t]}" "$(col "$t" "$c" 8)"
  done
  pairs=()
  for a in "${tlist[@]}"; do
    case "$a" in direct|nginx|nginx-lua|bare) continue ;; esac
    for b in bare nginx nginx-lua; do [ -n "${rps[$b]:-}" ] && pairs+=("$a/$b"); done
  done
  for b in nginx nginx-lua; do [ -n "${rps[bare]:-}" ] && [ -n "${rps[$b]:-}" ] && pairs+=("bare/$b"); done
  [ -n "${rps[nginx-lua]:-}" ] && [ -n "${rps[nginx]:-}" ] && pairs+=("nginx-lua/nginx")
  if [ "${#pairs[@]}" -gt 0 ]; then
    printf '%-24s %10s %10s %12s\n' "ratio (c=$c)" "req/s" "p99" "cpu/req"
    for pr in "${pairs[@]}"; do
      a="${pr%/*}"; b="${pr#*/}"
      printf '%-24s %10s %10s %12s\n' "$pr" "$(ratio "${rps[$a]}" "${rps[$b]}")" \
        "$(ratio "${p99[$a]}" "${p99[$b]}")" "$(ratio "${cpu[$a]}" "${cpu[$b]}")"
    done
  fi
  unset rps p99 cpu
done

if [ -n "$perf_target" ]; then
  pp="${pidof_target[$perf_target]:-}"
  [ -n "$pp" ] || { echo "compare.sh: --perf $perf_target: no such proxy target" >&2; exit 1; }
  pdata="${perf_data:-$tmp/perf.data}"
  c1=$(awk '{print $1}' <<<"$conns_list")
  log "profiling $perf_target (pid $pp) for ${duration}s at c=$c1"
  pin "$load_cpu" perf record -q -F 999 -e cpu-clock --call-graph dwarf,32768 \
    -p "$pp" -o "$pdata" -- sleep "$duration" 2>"$tmp/perf.log" &
  perf_pid=$!
  pids+=("$perf_pid")
  sleep 0.3
  # In a subshell: pin execs, and run directly it would replace this script (no report, no
  # cleanup of the servers started here).
  (pin "$load_cpu" timeout $((duration + 10)) wrk -t1 -c"$c1" -d"$((duration - 1))s" \
    "${wrk_headers[@]}" "http://127.0.0.1:${port[$perf_target]}$wrk_path") >/dev/null 2>&1 || true
  wait "$perf_pid" || true
  echo
  echo "== perf: $perf_target, self time by symbol (top 45)"
  perf report -i "$pdata" --no-children --sort dso,symbol --stdio -g none --percent-limit 0.4 \
    2>/dev/null | grep -v '^#' | grep -v '^$' | head -45
  echo
  echo "== perf: $perf_target, inclusive time of the proxy's own phases and hot callees"
  perf report -i "$pdata" --children --sort symbol --stdio -g none 2>/dev/null \
    | grep -E 'sluice|bare_pingora|ProxyHttp|proxy_|access_log|metrics|prometheus|serde_json|jiff|request_filter|upstream_peer|logging|malloc|free|HttpPeer|insert_header|alloc::fmt' \
    | head -45
fi
