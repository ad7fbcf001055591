#!/usr/bin/env bash
# External auth (`sluice.dev/auth-url`): the latency a subrequest adds, beside the auth server's
# own, all on loopback in one run.
#
# One nginx answers as the backend, another as the auth server (both `return 200`). One sluice
# on the files source serves host plain.test (no auth) and host auth.test (auth-url to the auth
# nginx by IP literal, so no resolver is involved) to the same backend. Each round runs wrk, in
# this order, against:
#   auth     the auth nginx straight (what a subrequest costs the auth server itself)
#   plain    sluice, host plain.test
#   guarded  sluice, host auth.test (a subrequest per request; the cache is off)
# and the figures are the medians over the rounds of wrk's p50 and p99. What to read: guarded
# minus plain (the latency the check adds) beside auth (the auth server's own), and the
# requests/s of guarded over plain.
#
#   benches/wrk/extauth.sh [--bin PATH] [--rounds N] [--duration SECS] [--conns C] [--threads T]
#
# Defaults: target/release/sluice, 3 rounds of 10 s, 32 connections, 2 wrk threads. Build first:
# `OPENSSL_NO_VENDOR=1 cargo build --release -p sluice`. Needs wrk, nginx and curl (installed
# with apt when missing). Every process started here is stopped on exit.
set -euo pipefail
bench_name=extauth
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin="$root/target/release/sluice"
rounds=3
duration=10
conns=32
threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "$bench_name: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "$bench_name: no sluice binary at $bin" >&2; exit 1; }
next_port="${BENCH_PORT_BASE:-18500}"
# shellcheck source=lib.sh
source "$root/benches/wrk/lib.sh"
in_range --rounds "$rounds" 1 20
in_range --duration "$duration" 1 120
in_range --conns "$conns" 1 1000
in_range --threads "$threads" 1 16
install_missing wrk:wrk nginx:nginx curl:curl
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

alloc_port http_port
alloc_port admin_port
alloc_port backend_port
alloc_port auth_port

# ---------------------------------------------------------------- the backend and the auth server
for role in backend auth; do
  port_var="${role}_port"
  hello_upstream_conf "$tmp/$role" "${!port_var}"
  "$NGINX" -e "$tmp/$role/error.log" -c "$tmp/$role/nginx.conf" &
  pids+=($!)
done

# ---------------------------------------------------------------- sluice
mkdir -p "$tmp/manifests"
cat >"$tmp/sluice.toml" <<EOF
[server]
http_listen = ["127.0.0.1:$http_port"]
admin_listen = "127.0.0.1:$admin_port"
[source.files]
directory = "manifests"
poll_interval_ms = 200
[access_log]
enabled = false
EOF
ingress() { # NAME HOST [AUTH-URL]
  printf 'apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: %s\n  namespace: bench\n' "$1"
  [ -n "${3:-}" ] && printf '  annotations: {"sluice.dev/auth-url": "%s"}\n' "$3"
  printf 'spec:\n  ingressClassName: sluice\n  rules:\n  - host: %s\n' "$2"
  printf '    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n---\n'
}
{
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: web, namespace: bench}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: bench, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: $backend_port}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
EOF
  ingress plain plain.test
  ingress guarded auth.test "http://127.0.0.1:$auth_port/verify"
} >"$tmp/manifests/routes.yaml"
"$bin" --config "$tmp/sluice.toml" >/dev/null 2>"$tmp/sluice.log" &
pids+=($!)

status_of() { # URL HOST: the status of one GET
  curl -s -o /dev/null --max-time 5 -w '%{http_code}' -H "Host: $2" "$1" || true
}
wait_for() { # DESCRIPTION COMMAND...: polls COMMAND every 50 ms, at most 20 s
  local what=$1; shift
  for _ in $(seq 1 400); do "$@" && return 0; sleep 0.05; done
  echo "$bench_name: timed out waiting for $what (log: $(tail -n 3 "$tmp/sluice.log"))" >&2; exit 1
}
answers_200() { [ "$(status_of "$1" "$2")" = 200 ]; }
wait_for "the auth server" answers_200 "http://127.0.0.1:$auth_port/verify" auth.local
wait_for "the plain route" answers_200 "http://127.0.0.1:$http_port/" plain.test
wait_for "the guarded route" answers_200 "http://127.0.0.1:$http_port/" auth.test

# ---------------------------------------------------------------- runs
run() { # URL HOST: "p50_us p99_us requests_per_s" of one wrk run
  local out
  out=$(wrk -t "$threads" -c "$conns" -d "${duration}s" --latency -H "Host: $2" "$1")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$bench_name: non-2xx answers from $1 (host $2):" >&2
    grep "Non-2xx" <<<"$out" >&2
    exit 1
  fi
  echo "$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")" \
    "$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")" \
    "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
}
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

cases=(auth plain guarded)
declare -A url=(
  [auth]="http://127.0.0.1:$auth_port/verify"
  [plain]="http://127.0.0.1:$http_port/"
  [guarded]="http://127.0.0.1:$http_port/"
)
declare -A host=([auth]=auth.local [plain]=plain.test [guarded]=auth.test)
for c in "${cases[@]}"; do : >"$tmp/$c.runs"; done
for ((r = 1; r <= rounds; r++)); do
  for c in "${cases[@]}"; do
    run "${url[$c]}" "${host[$c]}" >>"$tmp/$c.runs"
  done
done
declare -A p50 p99 rps
for c in "${cases[@]}"; do
  p50[$c]=$(awk '{print $1}' "$tmp/$c.runs" | median)
  p99[$c]=$(awk '{print $2}' "$tmp/$c.runs" | median)
  rps[$c]=$(awk '{print $3}' "$tmp/$c.runs" | median)
done

printf '%s: %d rounds of %d s, %d connections, %d wrk threads, binary %s (medians)\n' \
  "$bench_name" "$rounds" "$duration" "$conns" "$threads" "${bin#"$root"/}"
printf '%-10s %12s %12s %12s\n' case "p50 (us)" "p99 (us)" "requests/s"
for c in "${cases[@]}"; do
  printf '%-10s %12.0f %12.0f %12.0f\n' "$c" "${p50[$c]}" "${p99[$c]}" "${rps[$c]}"
done
printf 'added by the check (guarded - plain): p50 %.0f us, p99 %.0f us; the auth server alone: p50 %.0f us, p99 %.0f us\n' \
  "$(echo "${p50[guarded]} - ${p50[plain]}" | bc -l)" "$(echo "${p99[guarded]} - ${p99[plain]}" | bc -l)" \
  "${p50[auth]}" "${p99[auth]}"
printf 'requests/s guarded / plain: %.2f\n' "$(echo "${rps[guarded]} / ${rps[plain]}" | bc -l)"
