#!/usr/bin/env bash
# TLS comparison of sluice with nginx, on loopback, serving the same certificate in front of the
# same upstream (nginx answering "hello\n"):
#
#   - handshakes/s: wrk with `Connection: close`, so every request is a new TCP connection and a
#     full TLS handshake (wrk never resumes sessions), plus `openssl s_time -new` (sequential
#     full handshakes, no request) as a cross-check;
#   - keepalive requests/s over TLS: wrk on long-lived TLS connections.
#
#   benches/wrk/tls.sh                 # 3 interleaved rounds x 5 s, 32 connections
#   benches/wrk/tls.sh --quick         # smoke run: 1 round x 2 s
#
# Options:
#   --quick            1 round, 2 s runs, 1 s warm-up
#   --rounds N         interleaved rounds (default 3, at most 10)
#   --duration S       seconds per measured run (default 5, at most 30)
#   --conns C          wrk connections (default 32)
#   --key rsa|ecdsa    the certificate's key (default ecdsa: P-256; rsa: 2048 bits)
#   --no-build         use the sluice binary already built (target/release)
#
# Both proxies get one worker (sluice worker_threads = 1, nginx worker_processes 1) pinned to
# core 0; wrk, s_time and the upstream run on core 1. Both speak TLS 1.2 and 1.3 with Mozilla's
# intermediate ciphers; clients here negotiate TLS 1.3 with X25519. CPU per request is the
# proxy's utime+stime over the run divided by the requests wrk completed. Everything started
# here is stopped on exit; every run is bounded in time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

rounds=3
duration=5
warmup=2
conns=32
keytype=ecdsa
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rounds=1; duration=2; warmup=1 ;;
    --rounds) rounds="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --conns) conns="$2"; shift ;;
    --key) keytype="$2"; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "tls.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$rounds" -ge 1 ] && [ "$rounds" -le 10 ] || { echo "--rounds must be 1..10" >&2; exit 2; }
[ "$duration" -ge 1 ] && [ "$duration" -le 30 ] || { echo "--duration must be 1..30" >&2; exit 2; }
[ "$conns" -ge 1 ] && [ "$conns" -le 1000 ] || { echo "--conns must be 1..1000" >&2; exit 2; }
case "$keytype" in rsa|ecdsa) ;; *) echo "--key must be rsa or ecdsa" >&2; exit 2 ;; esac

log() { printf '[tls] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- tools
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
if [ "$(nproc)" -ge 2 ]; then proxy_cpu=0; load_cpu=1; else proxy_cpu=0; load_cpu=0; fi
clk_tck=$(getconf CLK_TCK)

# ---------------------------------------------------------------- build
cd "$repo"
export OPENSSL_NO_VENDOR=1
if [ "$build" -eq 1 ]; then
  log "building sluice (release)"
  cargo build --release -q -p sluice
fi
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
SLUICE_BIN="${SLUICE_BIN:-$target_dir/release/sluice}"
[ -x "$SLUICE_BIN" ] || { echo "tls.sh: $SLUICE_BIN is missing (run without --no-build)" >&2; exit 1; }
for _ in $(seq 1 36); do
  if pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; then
    log "a cargo/rustc is running; waiting (up to 3 min in all)"
    sleep 5
  else
    break
  fi
done
pgrep -x rustc >/dev/null && log "WARNING: rustc still running: figures will be noisy"

# ---------------------------------------------------------------- scratch, cleanup, ports
bench_name=tls.sh
next_port="${BENCH_PORT_BASE:-18300}"
# shellcheck source=benches/wrk/lib.sh
. "$(dirname "$0")/lib.sh"
alloc_port up; alloc_port ngx_port; alloc_port sl_http; alloc_port sl_https; alloc_port sl_admin

# ---------------------------------------------------------------- the shared certificate
if [ "$keytype" = rsa ]; then newkey=(-newkey rsa:2048); else newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); fi
openssl req -x509 "${newkey[@]}" -nodes -days 30 -subj "/CN=bench.local" \
  -addext "subjectAltName=DNS:bench.local" \
  -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
log "certificate: $keytype, CN=bench.local"

# ---------------------------------------------------------------- upstream
mkdir -p "$tmp/up" "$tmp/ngx" "$tmp/sl/manifests"
hello_upstream_conf "$tmp/up" "$up"
taskset -c "$load_cpu" "$NGINX" -e "$tmp/up/error.log" -c "$tmp/up/nginx.conf" &
pids+=($!)

# ---------------------------------------------------------------- nginx, TLS
cat >"$tmp/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/ngx/nginx.pid;
error_log $tmp/ngx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
$(nginx_temp_paths "$tmp/ngx")
  upstream backend { server 127.0.0.1:$up; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$ngx_port ssl http2;
    ssl_certificate $tmp/tls.crt;
    ssl_certificate_key $tmp/tls.key;
    # What sluice serves: TLS 1.2 and 1.3, Mozilla intermediate, tickets on.
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384;
    ssl_session_tickets on;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
EOF
taskset -c "$proxy_cpu" "$NGINX" -e "$tmp/ngx/error.log" -c "$tmp/ngx/nginx.conf" &
pids+=($!)
ngx_pid=$!

# ---------------------------------------------------------------- sluice, TLS
# wrk sends the URL's host (127.0.0.1) as SNI, which no Ingress lists: both proxies serve the
# certificate as their default one. The Ingress still lists bench.local in spec.tls, so the
# SNI lookup and the per-host policy are on the path.
cat >"$tmp/sl/sluice.toml" <<EOF
[server]
http_listen = ["127.0.0.1:$sl_http"]
admin_listen = "127.0.0.1:$sl_admin"
worker_threads = 1
shutdown_grace_period_secs = 1
drain_secs = 0

[tls]
https_listen = ["127.0.0.1:$sl_https"]
default_certificate_file = "$tmp/tls.crt"
default_key_file = "$tmp/tls.key"

[access_log]
enabled = false

[log]
level = "warn"

[source.files]
directory = "manifests"
EOF
crt_b64=$(base64 -w0 <"$tmp/tls.crt")
key_b64=$(base64 -w0 <"$tmp/tls.key")
cat >"$tmp/sl/manifests/bench.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata: {name: bench-tls, namespace: default}
type: kubernetes.io/tls
data:
  tls.crt: $crt_b64
  tls.key: $key_b64
---
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-1
  namespace: default
  labels: {kubernetes.io/service-name: bench}
addressType: IPv4
ports: [{name: http, port: $up}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench, namespace: default}
spec:
  ingressClassName: sluice
  tls: [{hosts: [bench.local], secretName: bench-tls}]
  rules:
    - host: bench.local
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: bench, port: {name: http}}}}
EOF
"$SLUICE_BIN" check --config "$tmp/sl/sluice.toml" >"$tmp/sl/check.log" 2>&1 \
  || { echo "tls.sh: sluice refuses the bench settings:" >&2; cat "$tmp/sl/check.log" >&2; exit 1; }
taskset -c "$proxy_cpu" "$SLUICE_BIN" --config "$tmp/sl/sluice.toml" >"$tmp/sl/log" 2>&1 &
pids+=($!)
sl_pid=$!

declare -A port pid
port[nginx]=$ngx_port; pid[nginx]=$ngx_pid
port[sluice]=$sl_https; pid[sluice]=$sl_pid
for t in nginx sluice; do
  ok=0
  for _ in $(seq 1 100); do
    body=$(curl -sk --max-time 1 --resolve "bench.local:${port[$t]}:127.0.0.1" -w ' %{http_code}' \
      "https://bench.local:${port[$t]}/" || true)
    if [ "$body" = "hello
 200" ]; then ok=1; break; fi
    sleep 0.1
  done
  [ "$ok" -eq 1 ] || { echo "tls.sh: $t does not answer 200 hello over TLS: '$body'" >&2; cat "$tmp/sl/log" >&2; exit 1; }
  # Both must present the very same certificate.
  fp=$(openssl s_client -connect "127.0.0.1:${port[$t]}" -servername bench.local </dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256)
  log "$t answers over TLS on 127.0.0.1:${port[$t]} with $fp"
done

# ---------------------------------------------------------------- measuring
cpu_ticks() { pids_cpu_ticks "$1" $(pgrep -P "$1" || true); } # a pid and its children

run_wrk() { # target mode(keepalive|close) seconds -> "rps p50 p99 us_cpu_per_req"
  local t="$1" mode="$2" secs="$3" hdr=()
  [ "$mode" = close ] && hdr=(-H "Connection: close")
  local before after out
  before=$(cpu_ticks "${pid[$t]}")
  out=$(taskset -c "$load_cpu" wrk -t 1 -c "$conns" -d "${secs}s" --latency -H "Host: bench.local" \
    "${hdr[@]}" "https://127.0.0.1:${port[$t]}/" 2>&1)
  after=$(cpu_ticks "${pid[$t]}")
  local reqs rps p50 p99
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    log "$t $mode: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ')"
  fi
  local us="n/a"
  if [ -n "$reqs" ] && [ "$reqs" -gt 0 ]; then
    us=$(awk -v d=$((after - before)) -v hz="$clk_tck" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
  fi
  echo "$rps $p50 $p99 $us"
}

run_s_time() { # target seconds -> full handshakes/s ("N connections in T real seconds")
  local t="$1" secs="$2"
  taskset -c "$load_cpu" openssl s_time -connect "127.0.0.1:${port[$t]}" -new -time "$secs" 2>/dev/null \
    | awk '/connections in [0-9.]+ real seconds/ {printf "%.0f", $1 / $4; exit}'
}

declare -A results
for r in $(seq 1 "$rounds"); do
  for t in nginx sluice; do
    for mode in keepalive close; do
      run_wrk "$t" "$mode" "$warmup" >/dev/null
      res=$(run_wrk "$t" "$mode" "$duration")
      results[$t,$mode]+="$res;"
      log "round $r $t $mode: $res"
    done
    st=$(run_s_time "$t" "$duration")
    results[$t,s_time]+="${st:-0};"
    log "round $r $t s_time -new: $st handshakes/s"
  done
done

# The run with the median req/s of each (target, mode), whole: its latencies and CPU go with it.
median_run() { tr ';' '\n' | awk 'NF' | sort -n -k1,1 | awk '{a[NR]=$0} END {print a[int((NR + 1) / 2)]}'; }
median() { tr ';' '\n' | awk 'NF' | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

printf '\n%s certificate, %s wrk connections, %s round(s) x %s s; the median run of each\n\n' \
  "$keytype" "$conns" "$rounds" "$duration"
printf '| target | mode | req/s | p50 | p99 | proxy CPU us/req |\n|---|---|---|---|---|---|\n'
for t in nginx sluice; do
  for mode in keepalive close; do
    read -r rps p50 p99 us <<<"$(median_run <<<"${results[$t,$mode]}")"
    label="keepalive"; [ "$mode" = close ] && label="new TLS connection per request"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$label" "$rps" "$p50" "$p99" "$us"
  done
done
printf '\n| target | openssl s_time -new, full handshakes/s (one sequential client) |\n|---|---|\n'
for t in nginx sluice; do
  printf '| %s | %s |\n' "$t" "$(median <<<"${results[$t,s_time]}")"
done
