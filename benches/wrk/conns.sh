#!/usr/bin/env bash
# What client connections cost and how long they live: sluice side by side with a bare Pingora
# proxy and an nginx reverse proxy, all on loopback, in front of the same upstream (nginx
# answering "hello\n").
#
#   benches/wrk/conns.sh                  # 10 000 connections per memory case
#   benches/wrk/conns.sh --n 2000         # fewer
#
# Options:
#   --n N            connections per memory case (default 10000, at most 18000: file limit)
#   --targets "..."  which of "sluice bare nginx", in this order (default all three)
#   --no-build       use the binaries already built (target/release)
#
# For each target, in one run:
#   idle       N keepalive connections, each after one answered GET: RSS growth / N
#   slow head  N connections, each holding 2 KiB of a request head without its end: RSS / N
#   oversized  300 connections each sending 120 header lines of 8 KiB without the final CRLF
#              (bounded to 20 s): RSS growth, and how many the target cut short
#   deadlines  a second start with 5 s deadlines (sluice: client_header_timeout_secs and
#              keepalive_timeout_secs 5; nginx: client_header_timeout and keepalive_timeout 5s;
#              bare Pingora has no such setting): 100 idle keepalive and 100 silent connections,
#              watched for 20 s; the median time to close, or how many were still open.
# RSS is VmRSS from /proc (nginx: master and worker summed), read once the client says every
# connection is in place, against the same process's RSS before; each case starts a fresh
# process. Every process started here is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
n=10000
targets="sluice bare nginx"
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --n) n="$2"; shift ;;
    --targets) targets="$2"; shift ;;
    --no-build) build=0 ;;
    *) echo "conns.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$n" -ge 1 ] && [ "$n" -le 18000 ] || { echo "conns.sh: --n must be 1..18000" >&2; exit 2; }
log() { printf '[conns.sh] %s\n' "$*" >&2; }

command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { echo "conns.sh: needs nginx" >&2; exit 1; }
command -v python3 >/dev/null 2>&1 || { echo "conns.sh: needs python3" >&2; exit 1; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
# Room for N client sockets in the client and N in each proxy.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((n + 1000)) ] || { echo "conns.sh: file limit $(ulimit -n) too low for --n $n" >&2; exit 1; }

cd "$repo"
if [ "$build" -eq 1 ]; then
  log "building sluice and bare-pingora (release)"
  cargo build --release -q -p sluice
  cargo build --release -q -p sluice-benches --bin bare-pingora
fi
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
SLUICE_BIN="${SLUICE_BIN:-$target_dir/release/sluice}"
BARE_BIN="${BARE_BIN:-$target_dir/release/bare-pingora}"

bench_name=conns.sh
next_port="${BENCH_PORT_BASE:-18300}"
# shellcheck source=benches/wrk/lib.sh
. "$here/lib.sh"
alloc_port up

# ---------------------------------------------------------------- the client
cat >"$tmp/client.py" <<'EOF'
# client.py MODE PORT N [WATCH]: opens N loopback connections to PORT and acts per MODE,
# prints "ready" once every connection is in place, then holds them (until killed), or with
# WATCH seconds reports how many the server closed and when.
import asyncio, statistics, sys, time
mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
watch = float(sys.argv[4]) if len(sys.argv) > 4 else 0
GET = b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n"
closed, cut, conns = [], 0, []

async def until_closed(r, since):
    try:
        while await r.read(65536):
            pass
    except OSError:
        pass
    closed.append(time.monotonic() - since)

async def one(sem):
    global cut
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        conns.append(w)
        if mode == "idle":
            w.write(GET)
            buf = b""
            while not buf.endswith(b"hello\n"):
                chunk = await asyncio.wait_for(r.read(4096), 10)
                if not chunk:
                    raise RuntimeError("closed before the answer")
                buf += chunk
        elif mode == "slowhead":
            w.write(b"GET / HTTP/1.1\r\nHost: bench.local\r\nX-Pad: " + b"a" * 2000)
            await w.drain()
        elif mode == "oversized":
            w.write(b"GET / HTTP/1.1\r\nHost: bench.local\r\n")
            line = b"X-Pad: " + b"a" * 8185 + b"\r\n"
            # Cut: the server closed the connection (after its 431, where it answers one)
            # before the client could send the whole head.
            try:
                for _ in range(120):
                    w.write(line)
                    await asyncio.wait_for(w.drain(), 20)
            except OSError:
                cut += 1
            except asyncio.TimeoutError:
                pass
        return r

async def main():
    sem = asyncio.Semaphore(500)
    readers = await asyncio.gather(*(one(sem) for _ in range(n)))
    print("ready", flush=True)
    if mode == "oversized":
        print(f"{cut}/{n}_cut_short", flush=True)
    if watch:
        since = time.monotonic()
        tasks = [asyncio.create_task(until_closed(r, since)) for r in readers]
        await asyncio.wait(tasks, timeout=watch)
        if closed:
            median = statistics.median(closed)
            print(f"{len(closed)}/{n} closed, median {median:.1f} s", flush=True)
        else:
            print(f"0/{n} closed in {watch:.0f} s", flush=True)
        return
    await asyncio.sleep(3600)

asyncio.run(main())
EOF

# ---------------------------------------------------------------- upstream
hello_upstream_conf "$tmp/up" "$up"
"$NGINX" -e "$tmp/up/error.log" -c "$tmp/up/nginx.conf" &
pids+=($!)

# ---------------------------------------------------------------- targets
# start TARGET DEADLINE_SECS (0: defaults): sets tpid and tport.
start() {
  local t="$1" dl="$2" d="$tmp/$1-$2"
  alloc_port tport
  mkdir -p "$d/manifests"
  case "$t" in
    sluice)
      local a; alloc_port a
      {
        printf '[server]\nhttp_listen = ["127.0.0.1:%s"]\nadmin_listen = "127.0.0.1:%s"\n' "$tport" "$a"
        printf 'worker_threads = 1\nshutdown_grace_period_secs = 1\ndrain_secs = 0\nmax_connections = %s\n' $((n + 500))
        [ "$dl" -gt 0 ] && printf 'client_header_timeout_secs = %s\nkeepalive_timeout_secs = %s\n' "$dl" "$dl"
        printf '[log]\nlevel = "warn"\n[access_log]\nenabled = false\n[source]\nkind = "files"\n'
        printf '[source.files]\ndirectory = "manifests"\n'
      } >"$d/sluice.toml"
      cat >"$d/manifests/bench.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-1, namespace: default, labels: {kubernetes.io/service-name: bench}}
addressType: IPv4
ports: [{name: http, port: $up}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench, namespace: default}
spec:
  ingressClassName: sluice
  rules:
    - http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: bench, port: {name: http}}}}]}
EOF
      "$SLUICE_BIN" --config "$d/sluice.toml" >"$d/log" 2>&1 &
      ;;
    bare)
      "$BARE_BIN" --listen "127.0.0.1:$tport" --threads 1 "127.0.0.1:$up" >"$d/log" 2>&1 &
      ;;
    nginx)
      local timeouts=""
      [ "$dl" -gt 0 ] && timeouts="client_header_timeout ${dl}s; keepalive_timeout ${dl}s;"
      cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log crit;
worker_rlimit_nofile $((2 * n + 1000));
events { worker_connections $((2 * n + 500)); }
http {
  access_log off;
  $timeouts
$(nginx_temp_paths "$d")
  upstream backend { server 127.0.0.1:$up; keepalive 64; }
  server {
    listen 127.0.0.1:$tport;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
      "$NGINX" -e "$d/error.log" -c "$d/nginx.conf" &
      ;;
  esac
  tpid=$!
  pids+=("$tpid")
  for _ in $(seq 1 100); do
    if python3 - "$tport" <<'EOF' 2>/dev/null; then return 0; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n")
data = b""
while True:
    c = s.recv(4096)
    if not c:
        break
    data += c
sys.exit(0 if data.endswith(b"hello\n") else 1)
EOF
    sleep 0.1
  done
  echo "conns.sh: $t did not answer within 10 s" >&2
  exit 1
}
stop_target() {
  kill -TERM "$tpid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$tpid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$tpid" 2>/dev/null || true
}
rss_kb() { # PID: VmRSS of it and its children (nginx workers), in KiB
  local sum=0 p v
  for p in "$1" $(pgrep -P "$1" || true); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
# hold MODE COUNT: runs the client until "ready" (bounded to 120 s), then prints the RSS growth
# in KiB and the client's extra lines; the client is then stopped and the target given 2 s.
hold() {
  local mode="$1" count="$2" before after line extra=""
  before=$(rss_kb "$tpid")
  coproc CLIENT { exec python3 "$tmp/client.py" "$mode" "$tport" "$count"; }
  local cpid=$CLIENT_PID
  while IFS= read -r -t 120 line <&"${CLIENT[0]}"; do
    [ "$line" = ready ] && break
  done
  [ "$mode" = oversized ] && IFS= read -r -t 5 extra <&"${CLIENT[0]}" || true
  after=$(rss_kb "$tpid")
  kill -TERM "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  sleep 2
  echo "$((after - before)) $before $extra"
}

printf '%-8s %-22s %-22s %-34s %-22s %-22s\n' target "idle KiB/conn" "slow-head KiB/conn" \
  "300 oversized heads" "idle closed after" "silent closed after"
for t in $targets; do
  log "$t: memory cases with $n connections"
  # A fresh process per case: memory freed by one case would be reused by the next.
  start "$t" 0
  read -r idle base _ < <(hold idle "$n")
  stop_target
  start "$t" 0
  read -r slow _ _ < <(hold slowhead "$n")
  stop_target
  start "$t" 0
  read -r over _ over_cut < <(hold oversized 300)
  stop_target
  log "$t: deadlines (5 s where the target has them)"
  start "$t" 5
  idle_close=$(python3 "$tmp/client.py" idle "$tport" 100 20 | tail -1)
  silent_close=$(python3 "$tmp/client.py" silent "$tport" 100 20 | tail -1)
  stop_target
  printf '%-8s %-22s %-22s %-34s %-22s %-22s\n' "$t" \
    "$(awk -v d="$idle" -v n="$n" 'BEGIN {printf "%.1f", d / n}')" \
    "$(awk -v d="$slow" -v n="$n" 'BEGIN {printf "%.1f", d / n}')" \
    "+$((over / 1024)) MiB, ${over_cut:-?}" \
    "$idle_close" "$silent_close"
  log "$t: base RSS $((base / 1024)) MiB"
done
