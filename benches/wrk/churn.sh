#!/usr/bin/env bash
# Ingress churn: what Ingresses that come and go under fresh names (preview environments) leave
# behind in sluice's memory and in /metrics.
#
# One sluice on the files source (loopback ports only). Each round replaces one manifest file
# with ALIVE Ingresses under names never used before (one Service for all of them), waits until
# /metrics lists the new round and no longer the previous one (bounded), and sends one request to
# the round's first route. Figures: RSS (VmRSS) and /metrics size before the churn, after the
# last round (ALIVE Ingresses live), and after the churn file is emptied; the ratios to the
# before figures are what to read (the same process, the same run).
#
#   benches/wrk/churn.sh [--bin PATH] [--rounds N] [--alive N]
#
# Defaults: target/release/sluice, 60 rounds, 200 Ingresses alive (the case of the issue:
# 12 000 names in all). Build first: `OPENSSL_NO_VENDOR=1 cargo build --release -p sluice`.
set -euo pipefail
bench_name=churn
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin="$root/target/release/sluice"
rounds=60
alive=200
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --alive) alive=$2; shift 2 ;;
    *) echo "$bench_name: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "$bench_name: no sluice binary at $bin" >&2; exit 1; }
# shellcheck source=lib.sh
source "$root/benches/wrk/lib.sh"

alloc_port http_port
alloc_port admin_port
alloc_port backend_port
mkdir -p "$tmp/manifests"
cat >"$tmp/sluice.toml" <<EOF
[server]
http_listen = ["127.0.0.1:$http_port"]
admin_listen = "127.0.0.1:$admin_port"
worker_threads = 1
[source.files]
directory = "manifests"
poll_interval_ms = 50
[access_log]
enabled = false
EOF
cat >"$tmp/manifests/service.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: api, namespace: preview}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: preview, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: $backend_port}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
EOF

# A backend that answers 200 to anything.
python3 - "$backend_port" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)
"$bin" --config "$tmp/sluice.toml" >/dev/null 2>"$tmp/sluice.log" &
sluice_pid=$!
pids+=("$sluice_pid")

metrics() { curl -s --max-time 5 "http://127.0.0.1:$admin_port/metrics"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$sluice_pid/status"; }
wait_for() { # DESCRIPTION COMMAND...: polls COMMAND every 50 ms, at most 20 s
  local what=$1; shift
  for _ in $(seq 1 400); do "$@" && return 0; sleep 0.05; done
  echo "$bench_name: timed out waiting for $what" >&2; exit 1
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz")" = 200 ]; }
wait_for "readiness" ready

round_file() { # ROUND: ALIVE Ingresses named pr-ROUND-I
  local r=$1 i
  for ((i = 0; i < alive; i++)); do
    printf 'apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: pr-%05d-%03d, namespace: preview}\n' "$r" "$i"
    printf 'spec:\n  ingressClassName: sluice\n  rules:\n  - host: pr-%05d-%03d.test\n' "$r" "$i"
    printf '    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]}\n---\n'
  done
}
publish() { # FILE-CONTENT on stdin: replaces the churn file atomically
  cat >"$tmp/churn.tmp" && mv "$tmp/churn.tmp" "$tmp/manifests/churn.yaml"
}
has_round() { # ROUND PREVIOUS
  local text; text=$(metrics)
  grep -q "ingress=\"pr-$(printf %05d "$1")-000\"" <<<"$text" &&
    ! grep -q "ingress=\"pr-$(printf %05d "$2")-" <<<"$text"
}
no_churn() { ! metrics | grep -q 'ingress="pr-'; }

before_rss=$(rss_kb); before_metrics=$(metrics | wc -c)
start=$(date +%s.%N)
for ((r = 0; r < rounds; r++)); do
  round_file "$r" | publish
  wait_for "round $r" has_round "$r" "$((r - 1))"
  curl -s -o /dev/null --max-time 5 -H "Host: pr-$(printf %05d "$r")-000.test" "http://127.0.0.1:$http_port/"
  if [ "$r" -eq 0 ]; then first_rss=$(rss_kb); first_metrics=$(metrics | wc -c); fi
done
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
peak_rss=$(rss_kb); peak_metrics=$(metrics | wc -c)
: | publish
wait_for "the churn to be removed" no_churn
after_rss=$(rss_kb); after_metrics=$(metrics | wc -c)

printf '%s: %d rounds of %d Ingresses (%d names) in %.1f s, binary %s\n' \
  "$bench_name" "$rounds" "$alive" "$((rounds * alive))" "$elapsed" "${bin#"$root"/}"
printf '%-28s %10s %12s\n' "" "RSS (KiB)" "/metrics (B)"
printf '%-28s %10d %12d\n' "before" "$before_rss" "$before_metrics"
printf '%-28s %10d %12d\n' "first round ($alive alive)" "$first_rss" "$first_metrics"
printf '%-28s %10d %12d\n' "last round ($alive alive)" "$peak_rss" "$peak_metrics"
printf '%-28s %10d %12d\n' "churn removed" "$after_rss" "$after_metrics"
printf 'last round / first round: RSS %.2f, /metrics %.2f\n' \
  "$(echo "$peak_rss / $first_rss" | bc -l)" "$(echo "$peak_metrics / $first_metrics" | bc -l)"
printf 'churn removed / before: RSS %.2f, /metrics %.2f\n' \
  "$(echo "$after_rss / $before_rss" | bc -l)" "$(echo "$after_metrics / $before_metrics" | bc -l)"
