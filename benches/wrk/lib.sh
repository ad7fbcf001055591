# Shared by the wrk scripts in this folder (sourced, not run): a scratch folder removed on exit
# with every process the script started, argument bounds and missing tools, free loopback ports,
# nginx's temporary paths, the CPU time of processes and wrk's durations. The sourcing script sets `bench_name` (for messages)
# first.

# ---------------------------------------------------------------- scratch and cleanup
tmp="$(mktemp -d)"
chmod 755 "$tmp"
# Every long-running process the script starts; cleanup stops them (TERM, then KILL after 3 s).
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- ports
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The first port tried; the sourcing script may set next_port before sourcing.
next_port="${next_port:-18100}"
alloc_port() { # VAR: sets VAR to the next free loopback port (no subshell: next_port advances)
  local _ap
  for _ in $(seq 1 200); do
    _ap=$next_port; next_port=$((next_port + 1))
    if port_free "$_ap"; then printf -v "$1" '%s' "$_ap"; return 0; fi
  done
  echo "$bench_name: no free loopback port below $next_port" >&2; exit 1
}

# ---------------------------------------------------------------- arguments and tools
in_range() { # OPTION VALUE MIN MAX: exits with a message unless MIN <= VALUE <= MAX
  [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] ||
    { echo "$bench_name: $1 must be $3..$4" >&2; exit 2; }
}
install_missing() { # COMMAND:PACKAGE...: installs (apt) the packages of the commands not found
  local need=() c
  for c in "$@"; do
    command -v "${c%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${c%%:*}" ] || need+=("${c#*:}")
  done
  [ "${#need[@]}" -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "$bench_name: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

# ---------------------------------------------------------------- wrk
to_us() { # wrk duration (e.g. 812.00us, 1.23ms, 2.00s) -> microseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000;
    else if (v ~ /m$/) print n * 60e6; else if (v ~ /s$/) print n * 1e6; else print n }'
}

# ---------------------------------------------------------------- nginx and /proc
nginx_temp_paths() { # DIR: nginx directives keeping every temporary file under DIR
  printf '  client_body_temp_path %s/body; proxy_temp_path %s/proxy; fastcgi_temp_path %s/fcgi;\n' "$1" "$1" "$1"
  printf '  uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;\n' "$1" "$1"
}
hello_upstream_conf() { # DIR PORT...: writes DIR/nginx.conf, an upstream answering "hello\n"
  # on each loopback PORT, keeping connections open as long as a proxy in front wants
  local dir="$1" port; shift
  mkdir -p "$dir"
  {
    printf 'worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n' "$dir" "$dir"
    printf 'events { worker_connections 4096; }\nhttp {\n  access_log off;\n'
    printf '  keepalive_requests 1000000;\n  keepalive_timeout 75s;\n'
    nginx_temp_paths "$dir"
    printf '  server {\n'
    for port in "$@"; do printf '    listen 127.0.0.1:%s;\n' "$port"; done
    printf '    location / { default_type text/plain; return 200 "hello\\n"; }\n  }\n}\n'
  } >"$dir/nginx.conf"
}
pids_cpu_ticks() { # PID...: their utime+stime summed, in clock ticks (gone processes count 0)
  local sum=0 p f
  for p in "$@"; do
    # Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    # shellcheck disable=SC2086 # split into fields on purpose
    set -- $f
    sum=$((sum + ${12} + ${13}))
  done
  echo "$sum"
}
