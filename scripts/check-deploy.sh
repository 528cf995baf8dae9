#!/usr/bin/env bash
# Checks the deploy bundle: the YAML is well-formed (yamllint), the
# Kubernetes manifests build (kubectl kustomize), the alert rules load
# (promtool), every metric the alerts and the dashboard use is one the
# services expose (docs/operations.md lists them, tests/operability.rs keeps
# that list true), every alert has its action in docs/operations.md, and
# the Kubernetes configuration loads in both services (their
# --print-config). Needs the binaries built (target/debug).
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null || {
        echo "check-deploy: $1 is missing: run ./scripts/install-test-services.sh" >&2
        exit 1
    }
}
need yamllint
need kubectl
need promtool
need python3

yamllint -s -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable,
    truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}, braces: {max-spaces-inside: 1}}}' \
    deploy/compose.yaml deploy/k8s deploy/prometheus
kubectl kustomize deploy/k8s >/dev/null
promtool check rules deploy/prometheus/alerts.yaml >/dev/null

python3 - <<'PY'
import json, re, sys, yaml
docs = open("docs/operations.md", encoding="utf-8").read()
metrics = docs.split("## Metrics", 1)[1].split("## Alerts", 1)[0]
known = set(re.findall(r"`(osago_[a-z_]+)`", metrics))
def used(expr):
    names = set()
    for name in re.findall(r"\b(osago_[a-z_]+)", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base)
    return names
problems = []
rules = yaml.safe_load(open("deploy/prometheus/alerts.yaml"))
for group in rules["groups"]:
    for rule in group["rules"]:
        for name in used(rule["expr"]) - known:
            problems.append(f"alert {rule['alert']} uses {name}, which no service exposes")
        anchor = "### " + rule["alert"]
        if anchor not in docs:
            problems.append(f"alert {rule['alert']} has no action in docs/operations.md")
dashboard = json.load(open("deploy/grafana/osago.json"))
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        for name in used(target["expr"]) - known:
            problems.append(f"panel {panel['title']!r} uses {name}, which no service exposes")
compose = yaml.safe_load(open("deploy/compose.yaml"))
for name, service in compose["services"].items():
    if "healthcheck" not in service:
        problems.append(f"compose service {name} has no health check")
    elif "OSAGO_HEALTH_URL" in str(service["healthcheck"]) and "OSAGO_HEALTH_URL" not in service.get("environment", {}):
        problems.append(f"compose service {name} checks OSAGO_HEALTH_URL without setting it")
    if ":latest" in str(service.get("image", "")):
        problems.append(f"compose service {name} uses an unpinned image")
    for dep, cond in (service.get("depends_on") or {}).items():
        if cond.get("condition") != "service_healthy":
            problems.append(f"compose service {name} does not wait for {dep} to be healthy")
for problem in problems:
    print("check-deploy:", problem, file=sys.stderr)
sys.exit(1 if problems else 0)
PY

for binary in core-app aggregator; do
    if ! out=$(target/debug/$binary --config deploy/k8s/osago.toml --print-config 2>&1); then
        echo "check-deploy: $binary does not load deploy/k8s/osago.toml: $out" >&2
        exit 1
    fi
done
echo "check-deploy: compose, kustomize, alert rules, dashboard and configuration are consistent"
